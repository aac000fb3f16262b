"""The benchmark's two figures, drawn from the per-configuration summaries."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _label(summary, precisions):
    if len(precisions) > 1:
        return f"{summary['config']} ({summary['precision']})"
    return summary["config"]


def plot_curves(summaries, path, title):
    """Test accuracy and test loss against epoch, one line per configuration (mean over seeds,
    shaded +-1 std when there are repeats)."""
    precisions = {s["precision"] for s in summaries}
    configs = list(dict.fromkeys(s["config"] for s in summaries))
    # One colour per configuration, one line style per precision.
    colours = plt.get_cmap("tab20" if len(configs) > 10 else "tab10")
    styles = dict(zip(sorted(precisions), ("-", "--", ":")))
    figure, axes = plt.subplots(1, 2, figsize=(14, 5))
    for summary in summaries:
        for axis, field in zip(axes, ("test_accuracy", "test_loss")):
            mean = summary[f"{field}_by_epoch"]["mean"]
            std = summary[f"{field}_by_epoch"]["std"]
            epochs = range(1, len(mean) + 1)
            (line,) = axis.plot(epochs, mean, marker="o", markersize=3,
                                color=colours(configs.index(summary["config"])),
                                linestyle=styles[summary["precision"]],
                                label=_label(summary, precisions))
            if summary["repeats"] > 1:
                axis.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                                  [m + s for m, s in zip(mean, std)],
                                  color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("test accuracy")
    axes[1].set_ylabel("test loss")
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_time_to_accuracy(summaries, path, target_accuracy, title):
    """Bars of training wall time and of steps until test accuracy first reached the target;
    configurations that never reached it are marked "not reached", and those that reached it
    with only some seeds say how many."""
    precisions = {s["precision"] for s in summaries}
    labels = [_label(s, precisions) for s in summaries]
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(summaries) + 2.5))
    fields = (("seconds_to_target", "training seconds"), ("steps_to_target", "steps"))
    for axis, (field, unit) in zip(axes, fields):
        means = [s[field]["mean"] for s in summaries]
        stds = [s[field]["std"] for s in summaries]
        positions = range(len(summaries))
        axis.barh(positions, [m or 0 for m in means], xerr=[s or 0 for s in stds], color="C0")
        for position, summary in zip(positions, summaries):
            reached, repeats = summary[field]["count"], summary["repeats"]
            if reached == 0:
                axis.text(0, position, " not reached", va="center", fontsize=8, color="C3")
            elif reached < repeats:
                # The bar averages only the seeds that got there; say how many did.
                axis.text(summary[field]["mean"] + summary[field]["std"], position,
                          f" {reached}/{repeats} seeds", va="center", fontsize=8, color="C3")
        ends = [m + (s or 0) for m, s in zip(means, stds) if m is not None]
        axis.set_xlim(0, 1.3 * max(ends) if ends else 1)
        axis.set_yticks(list(positions), labels)
        axis.invert_yaxis()
        axis.set_xlabel(f"{unit} to test accuracy {target_accuracy:g}")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
