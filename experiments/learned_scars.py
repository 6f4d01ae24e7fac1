"""Learn the scar (per-cell F and K fields) by gradient, and compare with match-map scars.

Learned scars: minimise  sum_p (1 - cos(V_T(cue_p), pattern_p)) + LAMBDA * scar size
over per-cell fields F = F_min + (F_max - F_min) sigmoid(a), K likewise (the storage
rule's bounds, so F and K never leave them), starting from F0, K0; V_T is the protocol's
substrate (9-point stencil, decay, clamp) after --recall-steps steps from a fresh noisy
cue each iteration; full BPTT with gradient checkpointing; Adam; a non-finite loss skips
the step and halves the learning rate.

Match-map scars: the reference rule, trained on the same patterns in order,
--train-steps each, scars accumulating (docs/protocol.md, phase 3).

Both are judged on held-out cues (seeds never used in training): recall quality (cosine
and IoU of the recall to its own pattern, beside the cue's own cosine at step 0), the cue
x pattern matrix and metrics.discrimination_index, scar size (scarring.scar_strength),
and a capacity curve over the number of stored patterns. Seeds run as one batch. The
substrate, the rule, the training start and the cue noise are the protocol's (every
protocol constant is a flag, as in the main study).

    python -m experiments.learned_scars --quick
    python -m experiments.learned_scars --seeds 3
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, PHASE3_PATTERNS, Protocol, protocol_of

torch = cli.lazy("torch")
np = cli.lazy("numpy")
metrics = cli.lazy("metrics")
patterns = cli.lazy("patterns")
scarring = cli.lazy("scarring")
differentiable = cli.lazy("models.differentiable")
adam = cli.lazy("models.adam")

EXTRA_PATTERN = "cross"    # stored fourth, after the protocol's three phase-3 patterns
N_PATTERNS = 4
MAIN_N = 3                 # the protocol's A, B, C
TEST_SEED_BASE = 10_000_000
STUDY_NAME = "learned_scars"


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = STUDY_NAME
    saved_state_refusal: ClassVar[str] = (
        "its scars are learned by gradient starting from the unscarred F0, K0, and its "
        "held-out recalls start from fresh cues")
    seeds: int = arg(3, "number of independent seeds, run as one batch", lo=1, hi=100_000)
    grid: int = arg(64, "grid size H = W (the reference geometry scales with it)", lo=16,
                    hi=4096)
    recall_steps: int = arg(200, "recall steps (learned scars are trained through them)",
                            lo=1)
    train_steps: int = arg(500, "match-map training steps per pattern", lo=1)
    cue_strength: float = arg(0.2, "cue V = clamp(s * target + noise)", lo=0.0, lo_open=True,
                              hi=1.0)
    iters: int = arg(40, "gradient iterations for the learned scars", lo=1)
    lr: float = arg(0.3, "Adam learning rate, on the logits of F and K", lo=0.0, lo_open=True)
    lam: float = arg(1e-3, "penalty per unit of scar size", lo=0.0)
    checkpoint_every: int = arg(50, "torch.utils.checkpoint segment length in steps (0 = "
                                    "off)", lo=0)
    test_cues: int = arg(3, "held-out cues per pattern and seed", lo=1)
    capacity: tuple[int, ...] = arg((1, 2, 3, 4), "numbers of stored patterns for the "
                                    "capacity curve (sorted, repeats dropped; '1,2' reads "
                                    "as '1 2')", lo=1, hi=N_PATTERNS)

    def check(self) -> None:
        self.capacity = tuple(sorted(set(self.capacity)))


# --quick: no checkpointing (its first use imports torch._dynamo, ~4 s; the tests check
# checkpointed == plain gradients separately)
QUICK = dict(seeds=2, grid=32, recall_steps=20, train_steps=40, iters=2, test_cues=1,
             checkpoint_every=0, capacity=(2, 3))


def stored_patterns(n, grid):
    """The first n of: the protocol's phase-3 patterns A, B, C, then a cross."""
    pats = list(patterns.phase3_targets(grid).values())
    pats.append(patterns.make_pattern(EXTRA_PATTERN, grid, grid))
    return torch.stack(pats[:n])


def learn_scars(pats, seeds, args, rule, log):
    """Per-seed learned (F, K) fields (S, H, W) for the stored patterns (P, H, W)."""
    S, P = len(seeds), len(pats)
    H, W = pats.shape[-2:]
    F_bounds, K_bounds = (rule.F_min, rule.F_max), (rule.K_min, rule.K_max)
    aF = torch.full((S, H, W), differentiable.logit_of(args.f0, *F_bounds), requires_grad=True)
    aK = torch.full((S, H, W), differentiable.logit_of(args.k0, *K_bounds), requires_grad=True)
    lr, moments, n_steps, history = args.lr, adam.adam_state([aF, aK]), 0, []
    targets = pats.repeat(S, 1, 1)                         # (S*P, H, W), seed-major
    physics = differentiable.Physics.of(args)
    with cli.progress(args.iters, f"learn {P} patterns") as bar:
        for it in range(args.iters):
            bar.update(1)
            cue_seeds = [s * 100_003 + it * 97 + p for s in seeds for p in range(P)]
            V0 = patterns.make_cue(targets, args.cue_strength, args.cue_noise, cue_seeds)
            F = differentiable.bounded(aF, *F_bounds)
            K = differentiable.bounded(aK, *K_bounds)
            _, V = differentiable.rollout(torch.ones_like(V0), V0, F.repeat_interleave(P, 0),
                                          K.repeat_interleave(P, 0), args.du, args.dv,
                                          args.recall_steps, physics,
                                          checkpoint_every=args.checkpoint_every)
            recall = (1 - differentiable.cosine(V, targets)).view(S, P).sum(1)
            size = scarring.scar_strength(F, K, args.f0, args.k0)
            loss = recall + args.lam * size
            ok = differentiable.finite_members(V).view(S, P).all(1) & torch.isfinite(loss)
            if not ok.all():
                lr *= 0.5
                log(f"NaN guard: iteration {it}: non-finite recall for seeds "
                    f"{[seeds[i] for i in (~ok).nonzero().flatten().tolist()]}; step skipped, "
                    f"lr -> {lr:.3g}")
                continue
            grads = torch.autograd.grad(loss.sum(), [aF, aK])
            n_steps += 1
            adam.adam_step([aF, aK], grads, moments, n_steps, lr)
            history.append({"iteration": it, "loss": loss.detach().tolist(),
                            "recall_term": recall.detach().tolist(),
                            "scar_size": size.detach().tolist()})
    with torch.no_grad():
        return differentiable.bounded(aF, *F_bounds), differentiable.bounded(aK, *K_bounds), history


def match_map_scars(study, pats, seeds, args):
    """Reference training (Study.store: the protocol's rule, medium and training start, the
    main study's phase-3 noise draws): patterns in order, --train-steps each, scars
    accumulating."""
    stored = study.store(pats, seeds, args.train_steps, first_index=NOISE["phase3_starts"][1])
    return stored["F"].clone(), stored["K"].clone()


def held_out_recall(study, F, K, pats, seeds, args):
    """Recall from held-out cues with fields F, K (S, H, W): per seed the cue x pattern
    cosine matrix (S, P, P), own-pattern IoU (S, P) and the cues' own cosine at step 0
    (S, P), each averaged over --test-cues cues."""
    S, P, C = len(seeds), len(pats), args.test_cues
    targets = pats.repeat_interleave(C, 0)                           # (P*C, H, W)
    cue_seeds = [TEST_SEED_BASE + s * 1_000 + p * 10 + c
                 for s in seeds for p in range(P) for c in range(C)]
    cues = patterns.make_cue(targets.repeat(S, 1, 1), args.cue_strength, args.cue_noise,
                             cue_seeds).view(S, P * C, *pats.shape[-2:])
    res = study.recall(F, K, cues, pats, args.recall_steps, metric_names=("cosine", "iou"))
    M = res["final"]["cosine"].view(S, P, C, P).mean(2)
    own = torch.arange(P).repeat_interleave(C)
    own_iou = res["final"]["iou"][:, torch.arange(P * C), own].view(S, P, C).mean(2)
    cue_cos = res["initial"]["cosine"][:, torch.arange(P * C), own].view(S, P, C).mean(2)
    return M, own_iou, cue_cos


def evaluate(study, label, F, K, pats, seeds, args):
    M, own_iou, cue_cos = held_out_recall(study, F, K, pats, seeds, args)
    own = M.diagonal(dim1=1, dim2=2)                   # (S, P)
    summarize = stats.summarize
    row = {"method": label, "n_patterns": len(pats),
           "recall_cosine": summarize(own.mean(1)),
           "recall_cosine_min": summarize(own.min(1).values),
           "recall_iou": summarize(own_iou.mean(1)),
           "cue_cosine_step0": summarize(cue_cos.mean(1)),
           "gain_over_cue": summarize((own - cue_cos).mean(1)),
           "scar_size": summarize(scarring.scar_strength(F, K, args.f0, args.k0)),
           "matrix_mean": M.mean(0).tolist()}
    if len(pats) >= 2:
        row["discrimination"] = summarize([metrics.discrimination_index(m) for m in M])
    return row


# ---- figures ------------------------------------------------------------------------------

def plot_main(results, fields, f0, k0, n, steps, path):
    """Cue x pattern matrices and scar maps of each method at the main pattern count."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(3.6 * len(results), 6.6))
    for c, r in enumerate(results):
        ax = axes[0][c]
        M = np.asarray(r["matrix_mean"])
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(M)):
            for j in range(len(M)):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w")
        names = [name.split("_")[0] for name, _, _ in PHASE3_PATTERNS] + [EXTRA_PATTERN]
        ax.set_xticks(range(len(M)), names[:len(M)])
        ax.set_yticks(range(len(M)), names[:len(M)])
        ax.set_xlabel("stored pattern")
        ax.set_ylabel("held-out cue of pattern")
        d = r.get("discrimination")
        ax.set_title(f"{r['method']}: recall {r['recall_cosine']['mean']:.2f}"
                     + (f", discr. {d['mean']:.2f}" if d else "")
                     + f"\nn={n} seeds, {steps} steps", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, label="cosine similarity")
        ax = axes[1][c]
        F, K = fields[r["method"]]
        im = ax.imshow((F - f0).abs().numpy() + (K - k0).abs().numpy(), cmap="magma", vmin=0,
                       vmax=0.08)
        ax.set_title(f"scar map (seed 0)\nsize {r['scar_size']['mean']:.1f}", fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, label="|F - F0| + |K - K0|")
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.1, top=0.88, wspace=0.6, hspace=0.5)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def plot_capacity(rows, n, steps, path):
    """Recall and discrimination against the number of stored patterns, per method."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    for method, style in (("learned", "o-"), ("match_map", "s-"), ("no_scar", "x--")):
        pts = [r for r in rows if r["method"] == method]
        for a, key in ((ax[0], "recall_cosine"), (ax[1], "discrimination")):
            xs = [r["n_patterns"] for r in pts if key in r]
            m = [r[key]["mean"] for r in pts if key in r]
            lo = [r[key]["mean"] - (r[key]["ci95_low"] if r[key]["ci95_low"] is not None
                                    else r[key]["mean"]) for r in pts if key in r]
            a.errorbar(xs, m, yerr=lo, fmt=style, capsize=3, label=method)
    ax[0].set_ylabel("recall cosine similarity (own pattern)")
    ax[1].set_ylabel("discrimination index (cosine)")
    for a in ax:
        a.set_xticks(sorted({r["n_patterns"] for r in rows}))
        a.set_xlabel("stored patterns")
        a.set_title(f"mean and 95% interval, n={n} seeds, {steps} recall steps", fontsize=8)
    ax[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.subplots_adjust(left=0.08, right=0.85, bottom=0.18, top=0.85, wspace=0.35)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


# ---- the run ------------------------------------------------------------------------------

def run(args, seeds, log) -> dict:
    """Learned, match-map and unscarred fields for every pattern count, evaluated."""
    study = scarring.Study(protocol_of(args), "cpu")
    rule = study.rule
    main_n = MAIN_N if MAIN_N in args.capacity else args.capacity[-1]
    rows, fields_main, wall = [], {}, {}
    for n in args.capacity:
        pats = stored_patterns(n, args.grid)
        t0 = time.time()
        Fl, Kl, hist = learn_scars(pats, seeds, args, rule, log)
        wall[f"learned_{n}"] = time.time() - t0
        t0 = time.time()
        Fm, Km = match_map_scars(study, pats, seeds, args)
        wall[f"match_map_{n}"] = time.time() - t0
        unscarred = (torch.full_like(Fm, args.f0), torch.full_like(Km, args.k0))
        for label, (F, K) in (("learned", (Fl, Kl)), ("match_map", (Fm, Km)),
                              ("no_scar", unscarred)):
            r = evaluate(study, label, F, K, pats, seeds, args)
            if label == "learned":
                r["history"] = hist
            rows.append(r)
            report_row(n, label, r)
            if n == main_n:
                fields_main[label] = (F[0], K[0])
    return {"rows": rows, "fields": fields_main, "main_n": main_n, "wall": wall,
            "rule": rule.as_dict(), "physics": differentiable.Physics.of(args).as_dict()}


def report_row(n, label, r):
    fmt, d = stats.format_stat, r.get("discrimination")
    print(f"n={n} {label:9s} recall cos {fmt(r['recall_cosine'])} "
          f"iou {fmt(r['recall_iou'])} cue@0 "
          f"{fmt(r['cue_cosine_step0'])} discr "
          f"{fmt(d) if d else '-'} scar {fmt(r['scar_size'], 1)}")


def main(argv=None):
    args = cli.parse(Args, cli.split_commas(argv, "--capacity"),
                     description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    if device.type != "cpu":
        print("note: runs on cpu; --device ignored", file=sys.stderr)
    logs = []

    def log(msg):
        logs.append(msg)
        print(msg, file=sys.stderr)

    start = time.time()
    r = run(args, seeds, log)
    result = {**cli.envelope(args, seeds, "cpu", time.time() - start), "results": r["rows"],
              "part_wall_time_s": r["wall"], "nan_guard_log": logs}
    result["config"].update(patterns=[name for name, _, _ in PHASE3_PATTERNS] + [EXTRA_PATTERN],
                            main_n=r["main_n"], scar_rule=r["rule"], physics=r["physics"])
    main_rows = [row for row in r["rows"] if row["n_patterns"] == r["main_n"]]
    with cli.staged_output(args.out_dir(), Args.study) as out:
        cli.write_json_atomic(out / "results.json", result)
        plot_main(main_rows, r["fields"], args.f0, args.k0, len(seeds), args.recall_steps,
                  out / "backprop_scars.png")
        plot_capacity(r["rows"], len(seeds), args.recall_steps,
                      out / "backprop_scar_capacity.png")
    print(f"wrote {args.out_dir() / 'results.json'} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    cli.run_cli(main)
