"""Composition: does a scarred medium build wholes from stored parts, or merely imprint?

Two families of wholes made of parts (patterns.py, "parts and wholes"): letters made of
strokes (connected: strokes touch at the joints) and scenes of shapes at set places
(disconnected). Parts or wholes are stored with the protocol's rule (scars accumulate,
--multi-train-steps each), then recalled from protocol cues (--multi-cue-strength x the
cue's shape + noise) on the scarred and on the unscarred medium:

  a  a whole never stored, made of stored parts
  b  a whole made of parts never stored (scenes also: never-stored shapes at the places
     where stored ones sit)
  c  a stored whole cued by one of its parts
  d  a part of a stored whole, cued alone (against the same part stored alone)
  plus each family's stored whole from its own cue (the reference recall).

Read-outs (mean and 95% interval over seeds; cosine and IoU each beside its cue's
step-0 score and the unscarred medium's recall): at the protocol's recall length
(--multi-recall-steps) and settled (--settle-steps). What an imprint predicts, two ways:
(1) the scar-mask prediction: V is lit (at the pattern's level) on the scarred connected
regions the cue lands on (each scarred region is an excitable patch lit by any kick
above threshold; a lit region spreads over touching scarred cells), and elsewhere is
what the same cue does on the unscarred medium; scored against the case's target like
a recall; (2) additivity: the recall of a whole against the union (cell-wise max) of
the recalls of its parts cued one at a time, on the same medium (independent parts:
cosine 1, no gain). The medium composes if a whole's recall beats or departs from the
union of its parts' recalls, or if case a exceeds case b by more than the imprint
predicts (`verdict`).

    python -m experiments.composition            # default: 8 seeds, 64 x 64
    python -m experiments.composition --quick    # a smoke run
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, metrics, patterns, scarring, sq = cli.lazy_modules(
    "torch", "metrics", "patterns", "scarring", "models.sequences")

# Each family: media to store (label -> wholes, each a tuple of part names), the cases
# (key, what, medium, cue parts, target parts, what an imprint predicts), the wholes
# whose recall is compared with the union of their parts' recalls (medium, parts), and
# the pair (composed, control) whose difference answers "does it compose?".
FAMILIES = {
    "strokes": dict(
        media={"parts": [("top",), ("left",), ("bottom",)], "whole": [("left", "right", "bottom")],
               "alone": [("bottom",)]},
        cases=[
            ("a", "never-stored whole C of stored parts", "parts", ("top", "left", "bottom"),
             ("top", "left", "bottom"), "recalled like a stored whole: each cued stroke "
             "lands on its own scar and lights it"),
            ("a_L", "never-stored whole L of stored parts", "parts", ("left", "bottom"),
             ("left", "bottom"), "recalled like a stored whole"),
            ("b", "whole -| of never-stored parts", "parts", ("middle", "right"),
             ("middle", "right"), "not recalled: no scar under the cue; the stored "
             "strokes it touches light instead"),
            ("whole", "stored whole U, its own cue", "whole", ("left", "right", "bottom"),
             ("left", "right", "bottom"), "recalled (reference)"),
            ("c", "stored whole U cued by its part (left)", "whole", ("left",),
             ("left", "right", "bottom"), "completed: the strokes touch, so the front "
             "lit on the cued stroke runs over the whole connected scar"),
            ("d", "part (bottom) of the stored whole U, alone", "whole", ("bottom",),
             ("bottom",), "not recallable alone: the lit part spreads over the connected "
             "whole, so V matches the whole, not the part"),
            ("d_ref", "part (bottom) stored alone", "alone", ("bottom",), ("bottom",),
             "recalled (reference for d)")],
        additive=[("parts", ("top", "left", "bottom")), ("whole", ("left", "right", "bottom"))],
        compare=("a", "b")),
    "scenes": dict(
        media={"parts": [("disc@0",), ("square@1",)],
               "whole": [("disc@0", "square@1", "diamond@2")], "alone": [("disc@0",)]},
        cases=[
            ("a", "never-stored scene of stored parts", "parts", ("disc@0", "square@1"),
             ("disc@0", "square@1"), "recalled like a stored whole"),
            ("b", "scene of never-stored parts at unscarred places", "parts",
             ("diamond@2", "disc@3"), ("diamond@2", "disc@3"),
             "not recalled: no scar under the cue (as unscarred)"),
            ("b_places", "never-stored shapes at the stored places", "parts",
             ("square@0", "diamond@1"), ("square@0", "diamond@1"),
             "the stored shapes light where the cue lands on them: recall scores their "
             "overlap with the cued shapes"),
            ("whole", "stored scene, its own cue", "whole", ("disc@0", "square@1", "diamond@2"),
             ("disc@0", "square@1", "diamond@2"), "recalled (reference)"),
            ("c", "stored scene cued by one part (disc@0)", "whole", ("disc@0",),
             ("disc@0", "square@1", "diamond@2"), "not completed: the parts do not touch, "
             "only the cued one lights (recall = the part's share of the scene)"),
            ("d", "part (disc@0) of the stored scene, alone", "whole", ("disc@0",),
             ("disc@0",), "recalled as if stored alone (its scar is disconnected)"),
            ("d_ref", "part (disc@0) stored alone", "alone", ("disc@0",), ("disc@0",),
             "recalled (reference for d)")],
        additive=[("parts", ("disc@0", "square@1")),
                  ("whole", ("disc@0", "square@1", "diamond@2"))],
        compare=("a", "b")),
}
METRIC_NAMES = ("cosine", "iou")
SCAR_TOLERANCE = 1e-6     # a cell whose F or K moved more than this from the background is scarred
SCAR_MARGIN = 2           # cells (at 64 x 64) V spreads past a lit shape: the fringe counted as
                          # on the scars, and the reach of a cue into scars next to it


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "composition"
    saved_state_starts: ClassVar[str] = (
        "the training of each scarred medium (its wholes stored in turn) starts from its "
        "U, V on its F, K; the unscarred medium stays F0, K0")
    grid: int = arg(64, "grid size H = W (the parts' geometry scales with it)", lo=16, hi=4096)
    settle_steps: int = arg(3000, "recall steps of the settled read-out (the protocol's "
                            "recall length is --multi-recall-steps)", lo=1)
    families: tuple[str, ...] = arg(tuple(FAMILIES), "families of parts and wholes",
                                    choices=tuple(FAMILIES))

    def check(self) -> None:
        if self.settle_steps < self.multi_recall_steps:
            raise ValueError(f"--settle-steps {self.settle_steps}: must be >= "
                             f"--multi-recall-steps {self.multi_recall_steps}")


QUICK = dict(grid=32, multi_train_steps=40, multi_recall_steps=40, settle_steps=120)


UNIT = (0.0, 1.0)


def scores(V, target):
    """{metric: (S,)} of V (S, H, W) against target (H, W)."""
    return {"cosine": metrics.cosine_similarity(V, target), "iou": metrics.iou(V, target)}


def imprint_mask(F, K, background, cue_shape, reach: int = 0):
    """The imprint's prediction per seed, (S, H, W) bool: the scarred connected regions
    (8-neighbour, the stencil's reach) that the cue's shape, grown by `reach` cells (what
    the cue's V diffuses into), touches."""
    import numpy as np
    from scipy import ndimage

    scar = ((F - background[0]).abs() > SCAR_TOLERANCE) | ((K - background[1]).abs() > SCAR_TOLERANCE)
    shape = cue_shape.cpu().numpy() > 0.3
    if reach:
        shape = ndimage.binary_dilation(shape, structure=np.ones((3, 3)), iterations=reach)
    out = []
    for s in scar.cpu().numpy():
        labels, _ = ndimage.label(s, structure=np.ones((3, 3)))
        hit = np.unique(labels[shape & (labels > 0)])
        out.append(np.isin(labels, hit) & (labels > 0))
    return torch.as_tensor(np.stack(out))


def plan_runs(family, spec):
    """Every recall of a family: cases on the scarred and unscarred media, then the parts
    of each additivity whole cued one at a time: [(key, medium, cue parts, target parts)]."""
    runs = [(key, medium, cue, target) for key, _, medium, cue, target, _ in spec["cases"]]
    runs += [(f"unscarred {key}", "unscarred", cue, target)
             for key, _, _, cue, target, _ in spec["cases"]]
    for medium, parts in spec["additive"]:
        runs += [(f"{medium} part {p}", medium, (p,), parts) for p in parts]
    return runs


def run_family(study, seeds, family, spec, settle):
    """Store the family's media, run every recall in one batch: raw results."""
    p, S = study.protocol, len(seeds)
    grid, dev = p.grid, dict(device=study.device, dtype=study.dtype)
    image = lambda parts: patterns.whole_image(parts, grid, grid, family).to(**dev)
    media, train = {}, {}
    for label, wholes in spec["media"].items():
        st = study.store(torch.stack([image(w) for w in wholes]), seeds, p.multi_train_steps,
                         first_index=NOISE["phase3_starts"][1])
        media[label] = (st["F"], st["K"])
        train[label] = stats.summarize_tensor(st["train_similarity"].T)
    media["unscarred"] = study.default_fields(S)
    runs = plan_runs(family, spec)
    F = torch.stack([media[m][0] for _, m, _, _ in runs], 1)               # (S, R, H, W)
    K = torch.stack([media[m][1] for _, m, _, _ in runs], 1)
    cue_imgs = torch.stack([image(c) for _, _, c, _ in runs])             # (R, H, W)
    targets = torch.stack([image(t) for _, _, _, t in runs])
    cues = torch.stack([study.cues(cue_imgs[r:r + 1], seeds, p.multi_cue_strength, "cue",
                                   NOISE["phase3_cues"][1] + r)[:, 0] for r in range(len(runs))], 1)
    R, H = len(runs), grid
    r = sq.replay(F.reshape(S * R, H, H), K.reshape(S * R, H, H),
                  cues.reshape(S * R, 1, H, H), targets.repeat(S, 1, 1).unsqueeze(1),
                  settle, p.record_every * 10, substrate=p.substrate(), frame_steps=(
                      0, p.multi_recall_steps, settle), **dev)
    frames = {t: r["frames"][i].view(S, R, H, H) for i, t in enumerate(r["frame_steps"])}
    return {"runs": runs, "media": media, "train": train, "frames": frames, "cues": cues,
            "cue_imgs": cue_imgs, "targets": targets, "curves": r["curves"].view(-1, S, R),
            "curve_steps": r["steps"]}


def report_family(study, spec, raw, settle):
    """The JSON block of one family: cases, comparisons, additivity."""
    p = study.protocol
    runs, frames = raw["runs"], raw["frames"]
    index = {key: i for i, (key, _, _, _) in enumerate(runs)}
    times = {"cue_step0": 0, "recall": p.multi_recall_steps, "settled": settle}
    background = study.rule.background(p.f0, p.k0)
    margin = max(1, round(SCAR_MARGIN * p.grid / 64))
    cases, per_seed = {}, {}
    for key, what, medium, cue, target, predicts in spec["cases"]:
        i, u = index[key], index[f"unscarred {key}"]
        tgt = raw["targets"][i]
        row = {"what": what, "medium": medium, "cue": list(cue), "target": list(target),
               "imprint_predicts": predicts}
        for name, t in times.items():
            sc = scores(frames[t][:, i], tgt)
            per_seed[(key, name)] = sc
            row[name] = {m: stats.summarize(v, bounds=UNIT) for m, v in sc.items()}
        for name in ("recall", "settled"):
            row[f"unscarred_{name}"] = {m: stats.summarize(v, bounds=UNIT) for m, v in
                                        scores(frames[times[name]][:, u], tgt).items()}
        F, K = raw["media"][medium]
        mask = imprint_mask(F, K, background, raw["cue_imgs"][i], margin).to(tgt) * patterns.PEAK
        for name in ("recall", "settled"):   # lit scars, and off them what the cue does alone
            pred = scores(torch.maximum(mask, frames[times[name]][:, u]), tgt)
            per_seed[(key, f"imprint_{name}")] = pred
            row[f"imprint_{name}"] = {m: stats.summarize(v, bounds=UNIT) for m, v in pred.items()}
        cases[key] = row
    comp, ctrl = spec["compare"]
    compare = {}
    for name in ("recall", "settled"):
        diff = {src: {m: per_seed[(comp, src)][m] - per_seed[(ctrl, src)][m] for m in METRIC_NAMES}
                for src in (name, f"imprint_{name}")}
        compare[name] = {m: {"measured": stats.summarize(diff[name][m], bounds=(-1, 1)),
                             "imprint": stats.summarize(diff[f"imprint_{name}"][m], bounds=(-1, 1)),
                             "measured_minus_imprint": stats.summarize(diff[name][m] - diff[f"imprint_{name}"][m], bounds=(-2, 2))}
                         for m in METRIC_NAMES}
    return {"cases": cases, "train_similarity": raw["train"],
            "compare": {"cases": [comp, ctrl], **compare},
            "additivity": additivity(spec, raw, index, times, background, margin)}


def scar_cells(F, K, background, margin: int):
    """(S, H, W) bool: scarred cells (F or K moved from the background) grown by
    `margin` cells (the lit fringe V spreads into)."""
    scar = ((F - background[0]).abs() > SCAR_TOLERANCE) | ((K - background[1]).abs() > SCAR_TOLERANCE)
    k = 2 * margin + 1
    return torch.nn.functional.max_pool2d(scar.float().unsqueeze(1), k, 1, margin).squeeze(1) > 0


def additivity(spec, raw, index, times, background, margin):
    """Recall of each additivity whole against the union (cell-wise max) of its parts'
    recalls, on the same medium: cosine 1 and no gain = the parts light independently
    (the imprint). gain: the whole's recall minus the union's, scored against the whole.
    Over the whole field, and on the scars only ("on_scars": off the scars each run
    grows its own noise-born labyrinth from the unscarred medium, so a union of k runs
    holds k runs' worth of it)."""
    out = {}
    for medium, parts in spec["additive"]:
        whole = next(key for key, _, m, cue, _, _ in spec["cases"]
                     if m == medium and tuple(cue) == tuple(parts))
        i = index[whole]
        tgt = raw["targets"][i]
        on = scar_cells(*raw["media"][medium], background, margin).to(tgt)
        block = {"whole_case": whole, "parts": list(parts)}
        for name in ("recall", "settled"):
            V = raw["frames"][times[name]]
            union = torch.stack([V[:, index[f"{medium} part {q}"]] for q in parts]).amax(0)
            block[name] = {}
            for where, m in (("field", torch.ones_like(on)), ("on_scars", on)):
                w, u = scores(V[:, i] * m, tgt), scores(union * m, tgt)
                block[name][where] = {
                    "whole_vs_union_cosine": stats.summarize(
                        metrics.cosine_similarity(V[:, i] * m, union * m), bounds=UNIT),
                    "whole_to_target": {k: stats.summarize(v, bounds=UNIT) for k, v in w.items()},
                    "union_to_target": {k: stats.summarize(v, bounds=UNIT) for k, v in u.items()},
                    "gain": {k: stats.summarize(w[k] - u[k], bounds=(-1, 1)) for k in METRIC_NAMES}}
        out[f"{medium}: {'+'.join(parts)}"] = block
    return out


def verdict(fam):
    """'composes' or 'imprint' (module docstring): a whole is more than its parts when,
    on the scars, its recall beats the union of its parts' recalls (gain > 0.05,
    interval above 0) or departs from it (cosine < 0.95, interval below), at the recall
    length or settled; or when a - b exceeds the imprint's a - b by > 0.05 (interval
    above 0) at either time."""
    def above(stat, level):
        return stat["ci95_low"] is not None and stat["ci95_low"] > 0 and stat["mean"] > level

    blocks = [b[t]["on_scars"] for b in fam["additivity"].values() for t in ("recall", "settled")]
    gain = any(above(b["gain"]["cosine"], 0.05) for b in blocks)
    departs = any(b["whole_vs_union_cosine"]["ci95_high"] is not None
                  and b["whole_vs_union_cosine"]["ci95_high"] < 0.95 for b in blocks)
    beyond = any(above(fam["compare"][t]["cosine"]["measured_minus_imprint"], 0.05)
                 for t in ("recall", "settled"))
    return {"composes": bool(gain or departs or beyond), "whole_beats_parts": gain,
            "whole_departs_from_parts": departs, "a_minus_b_beyond_imprint": beyond,
            "criterion": " ".join(verdict.__doc__.split(":", 1)[1].split())}


def print_family(family, fam):
    f = lambda s: stats.format_stat(s, 2)
    print(f"{family}:")
    for key, row in fam["cases"].items():
        print(f"  {key:9s} {row['what'][:46]:46s} cue {f(row['cue_step0']['cosine'])} / "
              f"{f(row['cue_step0']['iou'])} | recall {f(row['recall']['cosine'])} / "
              f"{f(row['recall']['iou'])} | settled {f(row['settled']['cosine'])} / "
              f"{f(row['settled']['iou'])} | unscarred {f(row['unscarred_settled']['cosine'])} | "
              f"imprint {f(row['imprint_settled']['cosine'])} / {f(row['imprint_settled']['iou'])}")
    c = fam["compare"]["settled"]["cosine"]
    print(f"  a - b (settled cosine): measured {f(c['measured'])}, imprint {f(c['imprint'])}, "
          f"beyond {f(c['measured_minus_imprint'])}")
    for name, b in fam["additivity"].items():
        for t in ("recall", "settled"):
            s, o = b[t]["field"], b[t]["on_scars"]
            print(f"  additivity {name}, {t}: whole vs union of parts {f(s['whole_vs_union_cosine'])}"
                  f" (on scars {f(o['whole_vs_union_cosine'])}), gain {f(s['gain']['cosine'])} "
                  f"(on scars {f(o['gain']['cosine'])})")
    print(f"  verdict: {'COMPOSES' if fam['verdict']['composes'] else 'imprint'}")


def save(fig, path) -> None:
    """Lay out below the suptitle, write and close a figure."""

    fig.tight_layout(rect=(0, 0, 1, 0.97))
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def figure_table(body, out, n):
    """The composition table: every case's read-outs as text cells, coloured by mean."""
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [("cue_step0", "cosine"), ("cue_step0", "iou"), ("recall", "cosine"),
            ("recall", "iou"), ("settled", "cosine"), ("settled", "iou"),
            ("unscarred_settled", "cosine"), ("unscarred_settled", "iou"),
            ("imprint_settled", "cosine"), ("imprint_settled", "iou")]
    rows, cells = [], []
    for family, fam in body["families"].items():
        for key, row in fam["cases"].items():
            rows.append(f"{family} {key}: {row['what']}")
            cells.append([row[a][m] for a, m in cols])
    mean = np.array([[s["mean"] for s in r] for r in cells])
    fig, ax = plt.subplots(figsize=(16, 0.42 * len(rows) + 1.6))
    ax.imshow(mean, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, r in enumerate(cells):
        for j, s in enumerate(r):
            ax.text(j, i, f"{s['mean']:.2f}\n[{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]",
                    ha="center", va="center", fontsize=6,
                    color="white" if s["mean"] < 0.5 else "black")
    ax.set_xticks(range(len(cols)), [f"{a.replace('_', ' ')}\n{m}" for a, m in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(f"Parts and wholes: mean [95% interval] over {n} seeds (recall at "
                 f"{body['recall_steps']} steps, settled at {body['settle_steps']})", fontsize=9)
    save(fig, out / "composition_table.png")


def figure_frames(raws, body, out):
    import matplotlib.pyplot as plt

    rows = [(family, i, key) for family, raw in raws.items()
            for i, (key, _, _, _) in enumerate(raw["runs"]) if not key.startswith(("unscarred", "parts part", "whole part"))]
    titles = ("target", "cue (step 0)", f"V at {body['recall_steps']}", f"V at {body['settle_steps']}",
              f"unscarred, {body['settle_steps']}")
    fig, axes = plt.subplots(len(rows), 5, figsize=(8, 1.7 * len(rows)), squeeze=False)
    for r, (family, i, key) in enumerate(rows):
        raw = raws[family]
        u = [k for k, _, _, _ in raw["runs"]].index(f"unscarred {key}")
        fr = raw["frames"]
        panels = (raw["targets"][i], fr[0][0, i], fr[body["recall_steps"]][0, i],
                  fr[body["settle_steps"]][0, i], fr[body["settle_steps"]][0, u])
        for c, img in enumerate(panels):
            axes[r, c].imshow(img.cpu(), cmap="magma", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=7)
        axes[r, 0].set_ylabel(f"{family} {key}", fontsize=7)
    fig.suptitle("Parts and wholes, seed 0 (colour: V in [0, 1])", fontsize=8)
    save(fig, out / "composition_frames.png")


def main(argv=None):
    args = cli.parse(Args, cli.split_commas(argv, "--families"),
                     description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    study = scarring.Study(protocol_of(args), device, initial=args.saved_state())
    t0 = time.perf_counter()
    body = {"recall_steps": args.multi_recall_steps, "settle_steps": args.settle_steps,
            "cue": f"clamp({args.multi_cue_strength} x shape + N(0, {args.cue_noise}^2), 0, 1)",
            "families": {}}
    raws = {}
    with cli.progress(len(args.families), "families") as bar:
        for family in args.families:
            spec = FAMILIES[family]
            raws[family] = run_family(study, seeds, family, spec, args.settle_steps)
            fam = report_family(study, spec, raws[family], args.settle_steps)
            fam["verdict"] = verdict(fam)
            body["families"][family] = fam
            bar.update()
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **body}
    result["config"].update(rule=study.rule.as_dict())
    with cli.staged_output(args.out_dir(), Args.study) as out:
        figure_table(body, out, len(seeds))
        figure_frames(raws, body, out)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    for family, fam in body["families"].items():
        print_family(family, fam)


if __name__ == "__main__":
    cli.run_cli(main)
