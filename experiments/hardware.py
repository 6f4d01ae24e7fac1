"""Scars in hardware: how many bits, how much device variation, drift and noise does a
stored pattern survive?

Each storage rule (--rules) stores the protocol's phase-1 pattern (square_spots,
--train-steps) and, separately, its phase-3 patterns A, B, C (--multi-train-steps each),
once per seed batch. Every non-ideality is then applied to the stored F and K (models/
hardware.py: each parameter is one device whose normalised conductance g in [0, 1] spans
the rule's programmable range), and the medium recalls:
  phase 2: the 15% cue of square_spots, --recall-steps (cosine and IoU to the target);
  phase 3: the 20% cues of A, B, C, a uniform V (--uniform-level) and pure noise
           (--noise-kick), read at --multi-recall-steps (the protocol's length) and at
           --settle-steps (a longer read-out, not checked settled): discrimination index
           over A, B, C, and the largest cosine and IoU of the uniform and noise starts
           to any stored pattern (refusal: low is good).
Non-idealities, each alone, then combined: quantised scars (--bits), programming noise
(--write-noise, fraction of the range), lognormal device variation (--variation), drift
g (t / t0)^-nu (--drift-factors, mapped to read-out times for --drift-nus), cells stuck at
the range's low or high end (--stuck), additive noise on U and V after every update
(--dynamics-noise), the arithmetic in float16 / bfloat16 (--precisions), and two
combined settings with aihwkit's phase-change (PCM) model read 1 day and 1 year after
programming. Training is not affected (it is the protocol's, in float32): a chip is
assumed programmed from ideal scars computed off-chip; only recall runs on the
non-ideal hardware.

Static non-idealities recall through scarring.Study.recall (the engine's compiled path),
every setting and seed in batches; dynamics noise and precision run the medium's step in
models.hardware.noisy_recall. Tolerance per non-ideality and rule: the harshest setting
up to which phase-2 recall keeps >= 90% and phase-3 discrimination (protocol length)
>= 80% of the ideal value, per seed ratios; by the mean, and by the lower / upper ends of
their 95% intervals. Writes hardware.json, hardware_table.md and hardware_<group>.png.

    python -m experiments.hardware --threads 1          # 8 seeds, 256 x 256
    python -m experiments.hardware --quick              # a smoke run (seconds)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, noise_seeds, protocol_of
import stats

torch, metrics, patterns, scarring, hw = cli.lazy_modules(
    "torch", "metrics", "patterns", "scarring", "models.hardware")

DAY, YEAR = 86_400.0, 3.156e7
RECALL_KEEP, DISCRIMINATION_KEEP = 0.9, 0.8   # tolerance: fractions of the ideal value
COMBINED = {"bits": 4, "variation": 0.05, "stuck": 0.001, "dynamics_noise": 1e-3}


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "hardware"
    saved_state_starts: ClassVar[str] = (
        "each rule's two stores (square_spots; A, B, C) start from its U, V on the rule's "
        "own unscarred F, K: the saved F, K are not used, as each rule's unscarred medium "
        "sets its programmable range")
    rules: tuple[str, ...] = arg(("match_map", "surround_inhibited"),
                                 "storage rules compared (scarring.RULES)")
    bits: tuple[int, ...] = arg((8, 7, 6, 5, 4, 3, 2, 1), "bits per stored F and K over "
                                "the programmable range", lo=1, hi=16)
    write_noise: tuple[float, ...] = arg((0.01, 0.03, 0.1, 0.2), "programming "
                                         "noise std, fraction of the range", lo=0.0, hi=1.0)
    variation: tuple[float, ...] = arg((0.01, 0.05, 0.1, 0.3), "device-to-device "
                                       "lognormal sigma", lo=0.0, hi=3.0)
    drift_factors: tuple[float, ...] = arg((0.97, 0.93, 0.85, 0.7, 0.55, 0.4, 0.25),
                                           "drift factors (t / t0)^-nu simulated (every g "
                                           "scaled by one factor)", lo=0.0, hi=1.0)
    drift_nus: tuple[float, ...] = arg((0.005, 0.03, 0.1), "drift exponents nu whose "
                                       "read-out times the factors are mapped to", lo=0.0,
                                       lo_open=True, hi=1.0)
    drift_t0: float = arg(20.0, "first read after programming t0, seconds (aihwkit's)",
                          lo=0.0, lo_open=True)
    step_time: float = arg(1e-6, "physical duration of one medium step, seconds (an analog "
                           "circuit's settling time; maps recall steps to seconds)",
                           lo=0.0, lo_open=True)
    stuck: tuple[float, ...] = arg((0.001, 0.01, 0.1), "fractions of stuck devices",
                                   lo=0.0, hi=1.0)
    dynamics_noise: tuple[float, ...] = arg((1e-4, 1e-3, 3e-3, 1e-2), "std of the "
                                            "noise added to U and V every update", lo=0.0,
                                            hi=1.0)
    precisions: tuple[str, ...] = arg(("float16", "bfloat16"), "low-precision arithmetic "
                                      "tried against float32", choices=("float16", "bfloat16"))
    combined_times: tuple[float, ...] = arg((DAY, YEAR), "combined PCM settings: read-out "
                                            "times after programming, seconds", lo=0.0)
    settle_steps: int = arg(600, "phase 3: the long read-out, steps (not checked settled)",
                            lo=1)
    uniform_level: float = arg(0.16, "refusal: uniform V start", lo=0.0, hi=1.0)
    noise_kick: float = arg(0.2, "refusal: std of the pure-noise start", lo=0.0, lo_open=True,
                            hi=1.0)
    batch_settings: int = arg(8, "settings per recall batch (memory)", lo=1)

    def check(self) -> None:
        if self.settle_steps < self.multi_recall_steps:
            raise ValueError(f"--settle-steps {self.settle_steps}: must be >= "
                             f"--multi-recall-steps ({self.multi_recall_steps})")
        for name in self.rules:
            if name not in scarring.RULES and name not in _registered():
                raise ValueError(f"--rules {name!r}: must be among {', '.join(_registered())}")


def _registered() -> list[str]:
    scarring.rule_class("match_map")   # imports the registered rules
    return sorted(scarring.RULES)


QUICK = dict(seeds=2, grid=32, train_steps=60, multi_train_steps=40, recall_steps=40,
             multi_recall_steps=30, settle_steps=40, bits=(4, 1), write_noise=(0.05,),
             variation=(0.1,), drift_factors=(0.5,), stuck=(0.01,),
             dynamics_noise=(1e-3,), precisions=("bfloat16",), combined_times=(DAY,))


# ---- settings ---------------------------------------------------------------------------------

def settings(args) -> list[dict]:
    """Every setting: {"group", "label", "value", static model or dynamic options}. Groups
    list their settings from mild to harsh (the order the tolerance walks)."""
    out = [{"group": "ideal", "label": "ideal", "value": 0}]
    out += [{"group": "bits", "label": f"{b} bits", "value": b, "bits": b}
            for b in sorted(args.bits, reverse=True)]
    out += [{"group": "write_noise", "label": f"write noise {s:g}", "value": s, "write": s}
            for s in sorted(args.write_noise)]
    out += [{"group": "variation", "label": f"variation {s:g}", "value": s, "variation": s}
            for s in sorted(args.variation)]
    out += [{"group": "drift", "label": f"drift factor {f:g}", "value": f, "drift": f}
            for f in sorted(args.drift_factors, reverse=True)]
    out += [{"group": f"stuck_{mode}", "label": f"stuck {mode} {f:g}", "value": f,
             "stuck": (f, mode)} for mode in ("low", "high") for f in sorted(args.stuck)]
    out += [{"group": "dynamics_noise", "label": f"dynamics noise {s:g}", "value": s,
             "noise": s} for s in sorted(args.dynamics_noise)]
    out += [{"group": "precision", "label": p, "value": p, "dtype": p} for p in args.precisions]
    out += [{"group": "combined", "label": f"PCM, {human_time(t)}", "value": t, "pcm": t,
             "bits": COMBINED["bits"], "variation": COMBINED["variation"],
             "stuck": (COMBINED["stuck"], "mixed"), "noise": COMBINED["dynamics_noise"]}
            for t in sorted(args.combined_times)]
    for i, s in enumerate(out):
        s["index"] = i
    return out


def is_dynamic(s) -> bool:
    return "noise" in s or "dtype" in s


def programmable_range(rule, p) -> dict:
    """{"F": (lo, hi), "K": (lo, hi)}: the range each device spans, the rule's clamps or
    the hull of the regimes it writes (and its background)."""
    if hasattr(rule, "F_min"):
        return {"F": (rule.F_min, rule.F_max), "K": (rule.K_min, rule.K_max)}
    F = [v for k, v in vars(rule).items() if k.startswith("F_")]
    K = [v for k, v in vars(rule).items() if k.startswith("K_")]
    F_bg, K_bg = rule.background(p.f0, p.k0)
    return {"F": (min(F + [F_bg]), max(F + [F_bg])), "K": (min(K + [K_bg]), max(K + [K_bg]))}


def draws(seeds, H, W, setting: int, param: int, kind: int, uniform=False):
    """(S, H, W) standard-normal (or uniform) draws, one generator per seed, keyed by the
    setting, the parameter (F 0, K 1) and the draw's kind."""
    index = 1000 + 40 * setting + 10 * param + kind
    gens = [torch.Generator().manual_seed(s) for s in noise_seeds(seeds, "other", index)]
    draw = torch.rand if uniform else torch.randn
    return torch.stack([draw(H, W, generator=g) for g in gens])


def perturb(P, lo, hi, s, args, seeds, param: int):
    """The stored parameter P (S, H, W) as the non-ideal hardware of setting s holds it."""
    H, W = P.shape[-2:]
    g = hw.to_conductance(P, lo, hi)

    def z(kind, uniform=False):
        return draws(seeds, H, W, s["index"], param, kind, uniform).to(P)

    if "bits" in s:
        g = hw.quantise(g, s["bits"])
    if "write" in s:
        g = hw.write_noise(g, s["write"], z(0))
    if "variation" in s:
        g = hw.device_variation(g, s["variation"], z(1))
    if "drift" in s:
        g = g * s["drift"]   # (t / t0)^-nu: only the factor matters for a single nu
    if "pcm" in s:
        g = hw.pcm_read(g, s["pcm"], z(2), z(3), z(4), t0=args.drift_t0)
    if "stuck" in s:
        g = hw.stuck(g, *hw.stuck_masks(z(5, uniform=True), *s["stuck"]))
    return hw.from_conductance(g, lo, hi)


# ---- recall -------------------------------------------------------------------------------------

def store(study, rule, seeds):
    p = study.protocol
    target = patterns.make_pattern("square_spots", p.grid, p.grid)
    three = torch.stack(list(patterns.phase3_targets(p.grid).values()))
    one = study.store(target[None], seeds, p.train_steps, rule=rule,
                      first_index=NOISE["phase1_start"][1], progress=f"store {rule.name} 1")
    abc = study.store(three, seeds, p.multi_train_steps, rule=rule,
                      first_index=NOISE["phase3_starts"][1], progress=f"store {rule.name} 3")
    return {"target": target, "three": three, "one": one, "abc": abc}


def build_cues(study, stored, seeds, args):
    """Phase-2 cue (S, 1, H, W); phase-3 cues A, B, C, uniform V, pure noise (S, 5, H, W)."""
    H = args.grid
    p2 = study.cues(stored["target"][None], seeds, args.cue_strength, *NOISE["phase2_cue"])
    p3 = study.cues(stored["three"], seeds, args.multi_cue_strength, *NOISE["phase3_cues"])
    uniform = patterns.uniform_cue(H, H, args.uniform_level, 0.0, seeds)
    noise = patterns.uniform_cue(H, H, 0.0, args.noise_kick,
                                 noise_seeds(seeds, "cue", 200))
    return p2, torch.cat([p3, uniform[:, None].to(p3), noise[:, None].to(p3)], 1)


def similarity(V, pats):
    """V (S, C, H, W) against pats (P, H, W): {metric: (S, C, P)}."""
    S, C, H, W = V.shape
    P = pats.shape[0]
    v = V.reshape(S * C, 1, H, W).expand(S * C, P, H, W).reshape(-1, H, W)
    q = pats.to(V).expand(S * C, P, H, W).reshape(-1, H, W)
    return {m: metrics.METRICS[m](v, q).reshape(S, C, P) for m in ("cosine", "iou")}


def recall_static(study, fields, cues2, cues3, stored, args):
    """Study.recall of n stacked settings: fields {"F1", "K1", "F3", "K3": (n S, H, W)}."""
    n = fields["F1"].shape[0] // cues2.shape[0]
    r2 = study.recall(fields["F1"], fields["K1"], cues2.repeat(n, 1, 1, 1),
                      stored["target"][None], args.recall_steps, metric_names=("cosine", "iou"))
    no_damage = torch.zeros(args.grid, args.grid, dtype=torch.bool)
    r3 = study.recall(fields["F3"], fields["K3"], cues3.repeat(n, 1, 1, 1), stored["three"],
                      args.settle_steps, metric_names=("cosine", "iou"), damage=no_damage,
                      damage_step=args.multi_recall_steps)   # the read at the protocol length
    return {"p2": {m: r2["final"][m][:, 0, 0] for m in ("cosine", "iou")},
            "length": r3["before_damage"], "long": r3["final"]}


def recall_dynamic(study, fields, cues2, cues3, stored, args, noise_std, dtype, gen_seed):
    """The same read-outs on models.hardware.noisy_recall (noise_std: (n S,) tensor)."""
    S, C3 = cues3.shape[:2]
    n = fields["F1"].shape[0] // S
    H = args.grid
    cues = torch.cat([cues2, cues3], 1).repeat(n, 1, 1, 1)    # (n S, 1 + C3, H, W)
    C = cues.shape[1]
    F = torch.cat([fields["F1"][:, None], fields["F3"][:, None].expand(-1, C3, H, H)], 1)
    K = torch.cat([fields["K1"][:, None], fields["K3"][:, None].expand(-1, C3, H, H)], 1)
    p = study.protocol
    steps = max(args.recall_steps, args.settle_steps)
    reads = hw.noisy_recall(torch.ones_like(cues).reshape(-1, H, H), cues.reshape(-1, H, H),
                            F.reshape(-1, H, H), K.reshape(-1, H, H), steps,
                            {args.recall_steps, args.multi_recall_steps, args.settle_steps},
                            p.substrate(), noise_std.repeat_interleave(C), getattr(torch, dtype),
                            torch.Generator().manual_seed(gen_seed),
                            study.rule.recall_inhibition())
    view = {k: v.reshape(n * S, C, H, H) for k, v in reads.items()}
    p2 = similarity(view[args.recall_steps][:, :1], stored["target"][None])
    return {"p2": {m: v[:, 0, 0] for m, v in p2.items()},
            "length": similarity(view[args.multi_recall_steps][:, 1:], stored["three"]),
            "long": similarity(view[args.settle_steps][:, 1:], stored["three"])}


def run_rule(args, seeds, name, device):
    """Store once, then recall every setting; {label: raw read-outs (per seed)}."""
    p = protocol_of(args)
    p.rule = name
    study = scarring.Study(p, device, initial=args.saved_state(), saved_fields=False)
    rule = study.rule
    stored = store(study, rule, seeds)
    cues2, cues3 = build_cues(study, stored, seeds, args)
    rng = programmable_range(rule, p)
    S = len(seeds)
    all_settings = settings(args)

    def fields_of(batch):
        out = {}
        for key, src in (("1", stored["one"]), ("3", stored["abc"])):
            for param, P in enumerate(("F", "K")):
                out[P + key] = torch.cat([perturb(src[P], *rng[P], s, args, seeds, param)
                                          if s["group"] != "ideal" else src[P] for s in batch])
        return out

    raw = {}
    static = [s for s in all_settings if not is_dynamic(s)]
    bar = cli.progress(len(all_settings), f"recall {name} (settings)")
    for i in range(0, len(static), args.batch_settings):
        batch = static[i:i + args.batch_settings]
        bar.update(len(batch))
        res = recall_static(study, fields_of(batch), cues2, cues3, stored, args)
        raw.update(split(res, batch, S))
    dynamic = [s for s in all_settings if is_dynamic(s)]
    for dtype in sorted({s.get("dtype", "float32") for s in dynamic}):
        group = [s for s in dynamic if s.get("dtype", "float32") == dtype]
        for i in range(0, len(group), args.batch_settings):
            batch = group[i:i + args.batch_settings]
            bar.update(len(batch))
            std = torch.tensor([s.get("noise", 0.0) for s in batch]).repeat_interleave(S)
            res = recall_dynamic(study, fields_of(batch), cues2, cues3, stored, args, std,
                                 dtype, noise_seeds([seeds[0]], "other", 5000 + i)[0])
            raw.update(split(res, batch, S))
    bar.close()
    F0, K0 = study.default_fields(S)
    control = recall_static(study, {"F1": F0, "K1": K0, "F3": F0, "K3": K0}, cues2, cues3,
                            stored, args)
    raw["control (unscarred)"] = split(control, [{"label": "c"}], S)["c"]
    raw["cue at step 0"] = {"p2": {"cosine": metrics.cosine_similarity(
        cues2[:, 0], stored["target"].to(cues2))}}
    return {"raw": raw, "range": rng, "rule": rule.as_dict(),
            "scar_strength": {"one": stored["one"]["scar_strength"][-1],
                              "three": stored["abc"]["scar_strength"][-1]}}


def split(res, batch, S):
    """Batched read-outs -> {label: the read-outs of its S seeds}."""
    def part(x, j):
        if isinstance(x, dict):
            return {k: part(v, j) for k, v in x.items()}
        return x[j * S:(j + 1) * S].cpu()
    return {s["label"]: part(res, j) for j, s in enumerate(batch)}


# ---- read-outs, tolerance --------------------------------------------------------------------

def readouts(r) -> dict:
    """Per-seed read-outs of one setting: phase-2 recall, phase-3 discrimination, the
    refusals (largest cosine of the uniform and noise starts to any stored pattern)."""
    out = {"p2_cosine": r["p2"]["cosine"], "p2_iou": r["p2"]["iou"]}
    for when in ("length", "long"):
        cos = r[when]["cosine"]
        out[f"p3_discrimination_{when}"] = metrics.discrimination_per_seed(cos[:, :3])
        out[f"p3_own_recall_{when}"] = cos[:, :3].diagonal(dim1=1, dim2=2).mean(1)
        out[f"uniform_largest_{when}"] = cos[:, 3].amax(-1)
        out[f"noise_largest_{when}"] = cos[:, 4].amax(-1)
        # IoU of masks at 0.3: a dead medium under dynamics noise has a noise floor that
        # cosine (scale-free) reads as ~0.2; IoU reads it as 0
        out[f"uniform_largest_iou_{when}"] = r[when]["iou"][:, 3].amax(-1)
        out[f"noise_largest_iou_{when}"] = r[when]["iou"][:, 4].amax(-1)
    return out


def ratio(x, ideal):
    """Per-seed x / ideal (0 where the ideal is 0)."""
    x, ideal = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ideal, dtype=torch.float64)
    return torch.where(ideal.abs() > 0, x / ideal.where(ideal.abs() > 0, torch.ones_like(ideal)),
                       torch.zeros_like(x))


def tolerance(rows) -> dict:
    """The harshest setting up to which every setting passes (mild to harsh): phase-2
    recall >= RECALL_KEEP and phase-3 discrimination >= DISCRIMINATION_KEEP of the ideal,
    judged on the mean ratio and on the low / high ends of its 95% interval."""
    out = {}
    for end in ("mean", "ci95_low", "ci95_high"):
        best, passed = "none", 0
        for row in rows:
            r2 = row["ratio_p2"][end] if row["ratio_p2"][end] is not None else row["ratio_p2"]["mean"]
            r3 = row["ratio_p3"][end] if row["ratio_p3"][end] is not None else row["ratio_p3"]["mean"]
            if not (r2 >= RECALL_KEEP and r3 >= DISCRIMINATION_KEEP):
                break
            best, passed = row["value"], passed + 1
        key = {"mean": "by_mean", "ci95_low": "surely", "ci95_high": "possibly"}[end]
        out[key] = best
        out[f"{key}_all_tested_pass"] = passed == len(rows)
    return out


def report(results, args) -> dict:
    body = {"rules": {}}
    for name, res in results.items():
        raw = res["raw"]
        ideal = readouts(raw["ideal"])
        rows = {}
        for label, r in raw.items():
            if label == "cue at step 0":
                continue
            ro = readouts(r)
            blocks = {k: stats.summarize(v, bounds=(-1.0, 1.0) if "discrimination" in k
                                         else (0.0, 1.0)) for k, v in ro.items()}
            blocks["ratio_p2"] = stats.summarize(ratio(ro["p2_cosine"], ideal["p2_cosine"]))
            blocks["ratio_p3"] = stats.summarize(ratio(ro["p3_discrimination_length"],
                                                       ideal["p3_discrimination_length"]))
            rows[label] = blocks
        groups = {}
        for s in settings(args):
            groups.setdefault(s["group"], []).append({"label": s["label"], "value": s["value"],
                                                      **rows[s["label"]]})
        tol = {g: tolerance(v) for g, v in groups.items()
               if g not in ("ideal", "combined", "precision")}
        tol["precision"] = [r["label"] for r in groups.get("precision", [])
                            if r["ratio_p2"]["mean"] >= RECALL_KEEP
                            and r["ratio_p3"]["mean"] >= DISCRIMINATION_KEEP]
        if "drift" in tol:   # the tolerated factor as a read-out time for each nu
            tol["drift_horizon_s"] = {
                f"nu {nu:g}": {end: (None if f == "none" else hw.drift_time(f, args.drift_t0, nu))
                               for end, f in tol["drift"].items() if not end.endswith("pass")}
                for nu in args.drift_nus}
        body["rules"][name] = {
            "programmable_range": res["range"], "rule": res["rule"],
            "scar_strength": {k: stats.summarize(v) for k, v in res["scar_strength"].items()},
            "cue_at_step0_p2_cosine": stats.summarize(raw["cue at step 0"]["p2"]["cosine"]),
            "control_unscarred": rows["control (unscarred)"], "groups": groups,
            "tolerance": tol}
    body["mapping"] = {
        "G": "each cell's F and K are each one device; its normalised conductance g = G / "
             "G_max in [0, 1] sets the parameter linearly over the rule's programmable "
             "range: P = P_lo + (P_hi - P_lo) g",
        "step_time_s": args.step_time,
        "recall_duration_s": args.settle_steps * args.step_time,
        "note": "one recall lasts far less than t0, so drift is frozen during a recall: "
                "the read-out time is the time since programming"}
    body["drift_nus"], body["drift_t0"] = list(args.drift_nus), args.drift_t0
    body["tolerance_rule"] = (f"harshest setting up to which phase-2 recall >= {RECALL_KEEP} "
                              f"and phase-3 discrimination (protocol length) >= "
                              f"{DISCRIMINATION_KEEP} of the ideal (per-seed ratios)")
    return body


# ---- outputs ------------------------------------------------------------------------------------

def human_time(seconds) -> str:
    """'none', or seconds in the largest unit that keeps the number >= 1."""
    if seconds is None:
        return "none"
    if seconds > 100 * YEAR:
        return "> 100 years"
    for unit, size in (("years", YEAR), ("days", DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def table(body) -> str:
    lines = ["| rule | non-ideality | tolerance (mean) | surely (CI low) | possibly (CI high) |",
             "|---|---|---|---|---|"]
    for name, r in body["rules"].items():
        for g, t in r["tolerance"].items():
            if isinstance(t, list):
                lines.append(f"| {name} | {g} | {', '.join(t) or 'none'} | | |")
            elif g == "drift_horizon_s":
                for nu, ends in t.items():
                    lines.append(f"| {name} | drift horizon, {nu} | " + " | ".join(
                        human_time(ends[k]) for k in ("by_mean", "surely", "possibly")) + " |")
            else:
                lines.append(f"| {name} | {g} | " + " | ".join(
                    f"{t[k]}{'+' if t[f'{k}_all_tested_pass'] else ''}"
                    for k in ("by_mean", "surely", "possibly")) + " |")
    lines += ["", "+: every tested setting passes (the tolerance is at least this).",
              "", "| rule | setting | phase-2 recall | phase-3 discrimination (length) | "
                  "(long) | uniform V largest cosine / IoU (long) | noise largest cosine / IoU (long) |",
              "|---|---|---|---|---|---|---|"]
    fmt = stats.format_stat
    for name, r in body["rules"].items():
        for g, rows in r["groups"].items():
            for row in rows:
                lines.append(f"| {name} | {row['label']} | {fmt(row['p2_cosine'])} | "
                             f"{fmt(row['p3_discrimination_length'])} | "
                             f"{fmt(row['p3_discrimination_long'])} | "
                             f"{fmt(row['uniform_largest_long'])} / "
                             f"{fmt(row['uniform_largest_iou_long'])} | "
                             f"{fmt(row['noise_largest_long'])} / "
                             f"{fmt(row['noise_largest_iou_long'])} |")
        c = r["control_unscarred"]
        lines.append(f"| {name} | control (unscarred) | {fmt(c['p2_cosine'])} | "
                     f"{fmt(c['p3_discrimination_length'])} | "
                     f"{fmt(c['p3_discrimination_long'])} | | |")
    return "\n".join(lines) + "\n"


def plot(body, out, n):
    import matplotlib.pyplot as plt

    from common import figures

    first = next(iter(body["rules"].values()))
    groups = [g for g in first["groups"] if g not in ("ideal",)]
    for g in groups:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, r in body["rules"].items():
            for nu in (body["drift_nus"] if g == "drift" else [None]):
                rows = r["groups"][g]
                x = [row["value"] for row in rows]
                label = name
                if nu is not None:   # factor -> read-out time for this nu, up to 10 years
                    t = [hw.drift_time(f, body["drift_t0"], nu) for f in x]
                    rows = [row for row, ti in zip(rows, t) if ti <= 10 * YEAR]
                    x = [ti for ti in t if ti <= 10 * YEAR]
                    label = f"{name}, nu {nu:g}"
                if not rows:
                    continue
                figures.plot_band(axes[0], x, [row["p2_cosine"] for row in rows], label)
                figures.plot_band(axes[1], x, [row["p3_discrimination_length"] for row in rows],
                                  label)
            for ax, key in zip(axes, ("p2_cosine", "p3_discrimination_length")):
                ax.axhline(r["groups"]["ideal"][0][key]["mean"], ls=":", lw=0.8,
                           color=ax.lines[-1].get_color() if ax.lines else "k")
        for ax, what in zip(axes, ("phase-2 recall (cosine)", "phase-3 discrimination")):
            ax.set(xlabel=g.replace("_", " ") + (" (read-out time after programming, s; "
                                                 "t0 = first read)" if g in ("drift", "combined")
                                                 else ""),
                   ylabel=what, title=f"{what}, mean and 95% band, n={n}")
            if g in ("drift", "combined", "dynamics_noise", "variation", "write_noise") \
                    or g.startswith("stuck"):
                ax.set_xscale("log")
        axes[1].legend(fontsize=7)
        figures.save_figure(fig, out / f"hardware_{g}.png")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    t0 = time.perf_counter()
    results = {name: run_rule(args, seeds, name, device) for name in args.rules}
    body = report(results, args)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **body}
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot(body, out, len(seeds))
        (out / "hardware_table.md").write_text(table(body))
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    for name, r in body["rules"].items():
        print(f"  {name}: " + "; ".join(f"{g} {t if isinstance(t, list) else t['by_mean']}"
                                       for g, t in r["tolerance"].items() if "by_mean" in t
                                       or isinstance(t, list)))


if __name__ == "__main__":
    cli.run_cli(main)
