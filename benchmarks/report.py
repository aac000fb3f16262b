"""Turns the list of run records into summaries, a plain-text table and results.json."""

import json
import math

import numpy as np

SUMMARY_FIELDS = (
    "final_test_accuracy", "best_test_accuracy", "epochs_to_target", "steps_to_target",
    "seconds_to_target", "samples_per_second", "optimizer_slot_bytes",
)


def mean_std(values):
    """{"mean", "std", "count"} over the values that are not None (sample std; 0 for one)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "count": 0}
    return {
        "mean": float(np.mean(present)),
        "std": float(np.std(present, ddof=1)) if len(present) > 1 else 0.0,
        "count": len(present),
    }


def summarize(runs):
    """One entry per (config, precision), in the order they ran: mean and std over seeds."""
    groups = {}
    for run in runs:
        groups.setdefault((run["config"], run["precision"]), []).append(run)
    summaries = []
    for (config, precision), members in groups.items():
        summary = {"config": config, "precision": precision, "repeats": len(members)}
        for field in SUMMARY_FIELDS:
            summary[field] = mean_std([run[field] for run in members])
        for field in ("test_accuracy", "test_loss"):
            per_epoch = np.array([[row[field] for row in run["history"]] for run in members])
            summary[f"{field}_by_epoch"] = {
                "mean": per_epoch.mean(axis=0).tolist(),
                "std": per_epoch.std(axis=0).tolist(),
            }
        summaries.append(summary)
    return summaries


NOT_REACHED = "not reached"


def _cell(stat, digits, scale=1.0, missing="-"):
    if stat["mean"] is None:
        return missing
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat["count"] > 1:
        text += f"±{stat['std'] * scale:.{digits}f}"
    return text


def _reached(stat, repeats, digits):
    text = _cell(stat, digits, missing=NOT_REACHED)
    if 0 < stat["count"] < repeats:
        text += f" ({stat['count']}/{repeats})"
    return text


def format_table(summaries, target_accuracy, epochs):
    """A fixed-width table: accuracy, time to target accuracy, throughput, optimizer memory,
    followed by what its marks mean when it has any."""
    target = f"{target_accuracy:g}"
    headers = (
        "config", "precision", "final acc", "best acc", f"epochs->{target}",
        f"steps->{target}", f"train s->{target}", "samples/s", "slot KiB",
    )
    rows = [
        (
            s["config"], s["precision"],
            _cell(s["final_test_accuracy"], 4), _cell(s["best_test_accuracy"], 4),
            _reached(s["epochs_to_target"], s["repeats"], 1),
            _reached(s["steps_to_target"], s["repeats"], 0),
            _reached(s["seconds_to_target"], s["repeats"], 1),
            _cell(s["samples_per_second"], 0), _cell(s["optimizer_slot_bytes"], 0, 1 / 1024),
        )
        for s in summaries
    ]
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]

    def line(row):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    notes = []
    counts = [(s["epochs_to_target"]["count"], s["repeats"]) for s in summaries]
    if any(count == 0 for count, _ in counts):
        notes.append(f"{NOT_REACHED}: test accuracy stayed below {target} in all {epochs} "
                     f"epochs of every seed (--target-accuracy sets the target)")
    if any(0 < count < repeats for count, repeats in counts):
        notes.append(f"(k/n): k of n seeds reached {target}; the figure averages those k")
    if any(s["repeats"] > 1 for s in summaries):
        notes.append("a±b: mean ± standard deviation over seeds")
    return "\n".join([line(headers), rule, *map(line, rows), *notes])


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def _finite(value):
    """Replaces NaN and infinities (a diverged run) by None, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_results(path, results):
    with open(path, "w") as f:
        json.dump(_finite(results), f, indent=2, default=_json_default)
        f.write("\n")
