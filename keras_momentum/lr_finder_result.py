"""What the learning-rate range test returns: the curve, suggested rates and a plot."""

import numpy as np


class RangeTestResult:
    """The record of a learning-rate range test (`keras_momentum.find_learning_rate`).

    Attributes:
        learning_rates: float64 array, the rate of each update run.
        losses: the training loss of each update's batch (the last may be inf or NaN).
        smoothed_losses: the debiased exponentially smoothed losses `s_k`.
        stop_reason: "completed", or why the sweep stopped early.
        suggestions: dict of suggested rates. Each rule looks at the finite points only,
            and of their `n`, skips the first `n // 10` and the last `max(1, n // 20)`,
            where the smoothed curve still carries its start or already the divergence
            (fastai's window):

            * "steepest": the rate where `ds/d(log η)` (`numpy.gradient` over the points)
              is most negative;
            * "minimum": the rate of the smallest smoothed loss, divided by 10;
            * "valley": the rate half way (by index) between the first and last point of
              the longest strictly decreasing subsequence of the smoothed losses (the
              longest stretch along which the loss keeps falling, bumps ignored).

        suggestion: `suggestions["steepest"]`.
    """

    def __init__(self, learning_rates, losses, smoothed_losses, stop_reason):
        self.learning_rates = learning_rates
        self.losses = losses
        self.smoothed_losses = smoothed_losses
        self.stop_reason = stop_reason
        self.suggestions = _suggestions(learning_rates, smoothed_losses)
        self.suggestion = self.suggestions["steepest"]

    def __repr__(self):
        return (
            f"RangeTestResult({len(self.losses)} updates, "
            f"rates {self.learning_rates[0]:.3g}..{self.learning_rates[-1]:.3g}, "
            f"suggestion={self.suggestion:.3g}, stop_reason={self.stop_reason!r})"
            if len(self.losses) else "RangeTestResult(no update)"
        )

    def plot(self, ax=None):
        """Draws the raw and smoothed loss against the rate (log axis), suggestion marked.

        Args:
            ax: a matplotlib `Axes` to draw on; a new figure is made when `None`.

        Returns:
            The matplotlib `Figure`.
        """
        import matplotlib.pyplot as plt  # imported here so that matplotlib stays optional

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.learning_rates, self.losses, color="0.75", linewidth=1, label="loss")
        ax.plot(self.learning_rates, self.smoothed_losses, label="smoothed loss")
        if np.isfinite(self.suggestion):
            index = int(np.argmin(np.abs(self.learning_rates - self.suggestion)))
            ax.axvline(self.suggestion, color="tab:red", linestyle="--", linewidth=1)
            ax.plot(
                [self.suggestion], [self.smoothed_losses[index]], "o", color="tab:red",
                label=f"suggestion {self.suggestion:.2g} (steepest descent)",
            )
        ax.set_xscale("log")
        both = np.concatenate([self.losses, self.smoothed_losses])
        finite = both[np.isfinite(both)]
        if finite.size:
            # The diverging tail would squash the interesting part of the curve.
            low, high = float(finite.min()), float(self.smoothed_losses[0])
            if np.isfinite(high) and high > low:
                ax.set_ylim(low - 0.05 * (high - low), high + 0.5 * (high - low))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.legend()
        return ax.figure


def _suggestions(rates, smoothed):
    finite = np.isfinite(smoothed)
    rates, smoothed = rates[finite], smoothed[finite]
    n = len(smoothed)
    first, last = n // 10, n - max(1, n // 20)
    if last - first < 3:  # too few points for a window
        first, last = 0, n
    rates, smoothed = rates[first:last], smoothed[first:last]
    if len(smoothed) < 2:
        nan = float("nan")
        return {"steepest": nan, "minimum": nan, "valley": nan}
    slope = np.gradient(smoothed, np.log(rates))
    return {
        "steepest": float(rates[np.argmin(slope)]),
        "minimum": float(rates[np.argmin(smoothed)]) / 10.0,
        "valley": _valley(rates, smoothed),
    }


def _valley(rates, smoothed):
    n = len(smoothed)
    length = np.ones(n, dtype=int)  # longest decreasing subsequence ending at each point
    previous = np.full(n, -1)
    for i in range(1, n):
        earlier = np.flatnonzero(smoothed[:i] > smoothed[i])
        if earlier.size:
            j = earlier[np.argmax(length[earlier])]
            length[i], previous[i] = length[j] + 1, j
    last = int(np.argmax(length))
    first = last
    while previous[first] >= 0:
        first = int(previous[first])
    return float(rates[(first + last) // 2])
