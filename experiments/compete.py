"""Which medium makes scars a memory? The competing-memories battery (battery.py) on
Gray-Scott storage rules and on the media of models/media.py.

Media (--media; any registered Gray-Scott --rule name, or a models/media.py medium):
  surround_inhibited  surround scars recalled under global inhibition of the feed (the
                      associative study's closest rule; the baseline)
  surround_area       route A: surround scars recalled under lit-area (k-winner) inhibition
  link_scar           route B: a bistable field whose per-edge conductances are the scars
  hebbian_field       route C: a neural field with a Hebbian per-cell kernel of radius
                      --radius (M = --couplings offsets per cell)
Rows (--rows): compete, refuse, complete, overlap, capacity (battery.py lists the targets).
--capacity-grids G ...: the capacity row again on these grids (the first medium only).

    python -m experiments.compete --quick
    python -m experiments.compete --media surround_area surround_inhibited link_scar --grid 128 --settle-max 4000 --threads 1
    python -m experiments.compete --media hebbian_field --radius 32 --couplings 128 --grid 128 --threads 1
    python -m experiments.compete --media hebbian_field --radius 2 4 8 16 --couplings 128 --grid 64 --threads 1
(docs/findings/compete.md reads these runs.)
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from common import cli
from common.cli import RunArgs, arg
from protocol import Protocol, protocol_of

torch, battery, media, scarring = cli.lazy_modules("torch", "battery", "models.media", "scarring")

GS_MEDIA = ("surround_inhibited", "surround_area")
FIELD_MEDIA = ("link_scar", "hebbian_field")
ALL = GS_MEDIA + FIELD_MEDIA


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "compete"
    media: tuple[str, ...] = arg(ALL, "media to run, in this order (Gray-Scott rule names "
                                 "or models/media.py media)", choices=ALL + ("surround", "channel",
                                                                             "match_map", "graded"))
    rows: tuple[str, ...] = arg(("compete", "refuse", "complete", "overlap", "capacity"),
                                "battery rows to run", choices=("compete", "refuse", "complete",
                                                                "overlap", "capacity"))
    ks: tuple[int, ...] = arg((1, 2, 4, 8, 16), "capacity: stored patterns, increasing",
                              lo=1, hi=64)
    k_main: int = arg(4, "stored four-disc patterns of compete, refuse, complete", lo=2, hi=16)
    radius: tuple[int, ...] = arg((64,), "hebbian_field: coupling radii (cells) to run",
                                  lo=1, hi=512)
    couplings: int = arg(96, "hebbian_field: couplings per cell (M)", lo=4, hi=2048)
    capacity_grids: tuple[int, ...] = arg((), "capacity row again on these grids (first "
                                          "medium; its last radius)", lo=16, hi=1024)
    settle_min: int = arg(3000, "Gray-Scott media: no settled read-out before this step",
                          lo=1)
    settle_max: int = arg(6000, "Gray-Scott media: longest recall in steps", lo=1)

    def check(self) -> None:
        if list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"--ks {' '.join(map(str, self.ks))}: must increase strictly")
        if self.settle_min > self.settle_max:
            raise ValueError(f"--settle-min {self.settle_min} exceeds --settle-max "
                             f"{self.settle_max}")
        if "hebbian_field" in self.media:
            smallest = min((self.grid, *self.capacity_grids))
            if max(self.radius) >= smallest:
                raise ValueError(f"--radius {max(self.radius)}: must be below the smallest "
                                 f"grid, {smallest} (--grid, --capacity-grids)")

    def storage_rule(self):
        return dataclasses.replace(protocol_of(self), rule="match_map").storage_rule()


QUICK = dict(seeds=2, grid=64, multi_train_steps=200, ks=(1, 2, 4), settle_min=600,
             settle_max=1000, radius=(32,), capacity_grids=())


def memories(args, device):
    """(label, Memory) for every medium of --media (one per radius for hebbian_field)."""
    protocol = dataclasses.replace(protocol_of(args), rule="match_map")
    study = scarring.Study(protocol, device)
    media.make_medium      # imported before make_rule: models.media registers surround_area
    out = []
    for name in args.media:
        if name == "hebbian_field":
            for r in args.radius:
                m = media.make_medium(name, radius=r, count=args.couplings)
                out.append((f"{name} R={r}", media.MediumMemory(m)))
        elif name in FIELD_MEDIA:
            out.append((name, media.MediumMemory(media.make_medium(name), max_steps=300)))
        else:
            rule = scarring.make_rule(name)
            out.append((name, media.RuleMemory(study, rule, args.settle_min, args.settle_max)))
    return out


def describe(memory) -> dict:
    if isinstance(memory, media.MediumMemory):
        return {**memory.medium.as_dict(), "train_steps": memory.train_steps,
                "settle": {"min": memory.min_steps,
                                                            "max": memory.max_steps,
                                                            "tol": memory.tol}}
    return {**memory.rule.as_dict(), "settle": {"min": memory.min_steps, "max": memory.max_steps,
                                                "tol": memory.tol}}


def run(args, seeds, device) -> tuple:
    cfg = battery.BatteryConfig(grid=args.grid, cue_strength=args.multi_cue_strength,
                                cue_noise=args.cue_noise, k_main=args.k_main, ks=tuple(args.ks),
                                rows=tuple(args.rows))
    results, figures = {}, {}
    for label, memory in memories(args, device):
        t0 = time.perf_counter()
        out = battery.run_battery(memory, seeds, cfg, progress=lambda m: print(m, flush=True))
        figures[label] = out.pop("figure", None)
        out.update(medium=describe(memory), wall_s=time.perf_counter() - t0)
        results[label] = out
        print(table_line(label, out), flush=True)
    if args.capacity_grids:
        label, memory = memories(args, device)[len(args.radius) - 1 if args.media[0] == "hebbian_field" else 0]
        results[label]["capacity_by_grid"] = {}
        for g in args.capacity_grids:
            t0 = time.perf_counter()
            if isinstance(memory, media.RuleMemory):
                memory.study = scarring.Study(dataclasses.replace(memory.study.protocol, grid=g), device)
            r = battery.run_battery(memory, seeds, battery.with_grid(cfg, g, ("capacity",)),
                                    progress=lambda m: print(m, flush=True))
            results[label]["capacity_by_grid"][str(g)] = {**r["capacity"],
                                                          "wall_s": time.perf_counter() - t0}
    return results, figures


def _fmt(s) -> str:
    if s is None or s.get("mean") is None:
        return "n/a"
    if s.get("ci95_low") is None:
        return f"{s['mean']:.2f} (n=1)"
    return f"{s['mean']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"


def cells(out) -> dict:
    """The table's cells of one medium: {column: text}."""
    c = {}
    if "compete" in out:
        r = out["compete"]["rate"]
        c["compete (rate)"] = f"{r['k']}/{r['n']} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]"
    if "refuse" in out:
        worst = max(out["refuse"].items(), key=lambda kv: battery.far_end(kv[1]["settled"], "<="))
        c["refuse (worst)"] = f"{worst[0]}: {_fmt(worst[1]['settled'])}"
    if "complete" in out:
        c["complete"] = _fmt(out["complete"]["settled"])
    if "overlap" in out:
        worst = min(((k, n) for k in ("full", "half") for n in "ABC"),
                    key=lambda kn: battery.far_end(out["overlap"][kn[0]][kn[1]], ">="))
        c["overlap (worst)"] = f"{worst[0]} {worst[1]}: {_fmt(out['overlap'][worst[0]][worst[1]])}"
    if "capacity" in out:
        c["capacity (mean; far end)"] = (f"{out['capacity']['capacity']}; "
                                         f"{out['capacity']['capacity_far_end']}")
    v = out["verdict"]
    c["targets 1-4"] = "met" if v["targets_1_to_4"] else "missed: " + ", ".join(
        r for r in ("compete", "refuse", "complete", "overlap") if v.get(r) is False)
    return c


def table_line(label, out) -> str:
    return f"  {label}: " + "; ".join(f"{k} {v}" for k, v in cells(out).items())


def markdown_table(results) -> str:
    cols = list(next(iter(results.values())) and cells(next(iter(results.values()))))
    lines = ["| medium | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, out in results.items():
        c = cells(out)
        lines.append(f"| {label} | " + " | ".join(c.get(k, "") for k in cols) + " |")
    return "\n".join(lines)


def plot_states(figures, path) -> None:
    """Per medium (seed 0): a mixed cue and its settled state, noise of std 0.1 and its
    settled state (contours: the two patterns of the mixed cue)."""
    import matplotlib.pyplot as plt

    from common import figures as figs

    names = [n for n, f in figures.items() if f is not None]
    fig, axes = plt.subplots(len(names), 4, figsize=(7.2, 1.9 * len(names) + 0.3), squeeze=False)
    for row, name in zip(axes, names):
        f = figures[name]
        for ax, (title, img) in zip(row, (("mixed cue", f["cue_mixed"]), ("settled", f["mixed"]),
                                          ("noise 0.1, no cue", f["cue_noise"]),
                                          ("settled", f["noise"]))):
            ax.imshow(img.float().cpu(), cmap="magma", vmin=0, vmax=float(max(img.max(), 1e-6)))
            for p, colour in zip(f["patterns"], ("cyan", "lime")):
                ax.contour((p > 0.3).float().cpu(), levels=[0.5], colors=colour, linewidths=0.4)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=8)
    fig.suptitle("seed 0; cyan, lime: the two stored patterns the mixed cue halves", fontsize=8)
    figs.save_figure(fig, path, dpi=70)


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    cli.check_out_dir(args.out_dir())
    t0 = time.perf_counter()
    results, figures = run(args, seeds, device)
    wall = time.perf_counter() - t0
    body = {**cli.envelope(args, seeds, device, wall), "targets": battery.TARGETS,
            "media": results, "table": markdown_table(results)}
    with cli.staged_output(args.out_dir(), Args.study) as out:
        if any(f is not None for f in figures.values()):   # the compete and refuse rows
            plot_states(figures, out / "compete_states.png")
        cli.write_json_atomic(out / "compete.json", body)
    print(f"compete: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    print(body["table"])


if __name__ == "__main__":
    cli.run_cli(main)
