"""The toy bench's summaries and tables: mean and std over mixture seeds, the SW2 and cost
tables, and issue 11's goals as ratios of seed means."""

from __future__ import annotations

import statistics
from typing import Any

from soundvcm.bench.toy_config import Variant


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def summarise(results: list[dict]) -> dict[str, Any]:
    """Mean and std over seeds of every SW2 figure and average-velocity MSE; the floor per seed."""
    out: dict[str, Any] = {"sw2": {}, "sw2_raw": {}, "avg_velocity_mse": {}, "floor": {}}
    for kind in ("sw2", "sw2_raw"):
        keys = [k for r in results for k in r[kind]]
        for key in dict.fromkeys(keys):
            out[kind][key] = _mean_std([r[kind][key] for r in results if key in r[kind]])
    for label in dict.fromkeys(r["label"] for r in results):
        mses = [r["avg_velocity_mse"] for r in results if r["label"] == label and "avg_velocity_mse" in r]
        if mses:
            out["avg_velocity_mse"][label] = _mean_std(mses)
    for r in results:
        out["floor"][str(r["seed"])] = r["floor"]
    return out


def _fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown_tables(result: dict[str, Any]) -> str:
    summary, steps, costs = result["summary"], result["steps"], result["costs"]
    lines = ["| sampler | NFE | SW2 (EMA), mean ± std | per seed | SW2 (raw) |", "|---|---|---|---|---|"]
    for v in (Variant(**{**d, "changes": tuple(tuple(c) for c in d["changes"])}) for d in result["variants"]):
        for key, n in v.settings().items():
            if key in summary["sw2"]:
                nfe = f"{n}x2" if not v.consistency else str(n)
                per_seed = " ".join(f"{x:.3f}" for x in summary["sw2"][key]["values"])
                lines.append(
                    f"| {key} | {nfe} | {_fmt(summary['sw2'][key])} | {per_seed} | {_fmt(summary['sw2_raw'][key])} |"
                )
    floors = list(summary["floor"].values())
    lines.append(
        f"| two exact sample sets (floor) | - | {_fmt(_mean_std(floors))} | {' '.join(f'{x:.3f}' for x in floors)} | |"
    )
    ref = next(iter(costs.values()))["cpu_ms_per_step"]
    lines += ["", "| variant | steps | CPU ms / step | cost vs first | peak mem (MB) | avg-velocity MSE (EMA) |"]
    lines.append("|---|---|---|---|---|---|")
    for label, c in costs.items():
        mse = summary["avg_velocity_mse"].get(label)
        lines.append(
            f"| {label} | {steps[label]} | {c['cpu_ms_per_step']:.2f} | {c['cpu_ms_per_step'] / ref:.2f}x | "
            f"{c['peak_mem_mb']:.2f} | {_fmt(mse) if mse else '-'} |"
        )
    return "\n".join(lines)


def goals_table(result: dict[str, Any]) -> str:
    """Issue 11's goals, as ratios of seed means (equal cost, EMA weights)."""
    sw2 = {k: v["mean"] for k, v in result["summary"]["sw2"].items()}
    if "fm@50" not in sw2:
        return ""
    lines = ["| goal | variant | value | met |", "|---|---|---|---|"]
    for label in ("vcm", "vcm_split_p"):
        if f"{label}@1" in sw2:
            r1 = sw2[f"{label}@1"] / sw2["fm@50"]
            lines.append(f"| 1-step SW2 <= 1.5x FM 25x2 | {label} | {r1:.2f}x | {'yes' if r1 <= 1.5 else 'no'} |")
            r4 = sw2[f"{label}@4"] / sw2["fm@50"]
            lines.append(f"| 4-step SW2 <= FM 25x2 | {label} | {r4:.2f}x | {'yes' if r4 <= 1.0 else 'no'} |")
    for vcm, mf in (("vcm", "meanflow"), ("vcm_split_p", "meanflow_split_p")):
        if f"{vcm}@1" in sw2 and f"{mf}@1" in sw2:
            a, b = sw2[f"{vcm}@1"], sw2[f"{mf}@1"]
            lines.append(f"| 1-step VCM < MeanFlow | {vcm} vs {mf} | {a:.3f} vs {b:.3f} | {'yes' if a < b else 'no'} |")
    return "\n".join(lines)
