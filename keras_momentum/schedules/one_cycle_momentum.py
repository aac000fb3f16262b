"""The momentum half of the 1cycle policy: momentum moves opposite to the learning rate."""

import keras

from keras_momentum.schedules import _common, _validation


def one_cycle_phase_ends(total_steps, pct_start, three_phase):
    """Phase end steps exactly as torch's `OneCycleLR` computes them; checks they increase."""
    if three_phase:
        rise = pct_start * total_steps
        ends = [rise - 1.0, 2.0 * rise - 2.0, total_steps - 1.0]
    else:
        ends = [pct_start * total_steps - 1.0, total_steps - 1.0]
    for before, after in zip([0.0] + ends, ends):
        if after <= before:
            raise ValueError(
                f"`pct_start` * `total_steps` must give every phase a positive length, got "
                f"pct_start={pct_start!r}, total_steps={total_steps!r}, "
                f"three_phase={three_phase!r} (phases ending at steps {ends})"
            )
    return ends


@keras.saving.register_keras_serializable(package="keras_momentum")
class OneCycleMomentum(_common.Schedule):
    """Momentum cycle of the 1cycle policy; usually built by `OneCycle.momentum_schedule()`.

    With `e_1 = pct_start * total_steps - 1`, `e_2 = total_steps - 1` and the annealing curve
    `A(start, end, p)` (cosine: `end + (start - end) * (1 + cos(pi p)) / 2`; linear:
    `start + (end - start) * p`):

    ```
    t <= e_1:        A(max_momentum, base_momentum, t / e_1)
    e_1 < t <= e_2:  A(base_momentum, max_momentum, (t - e_1) / (e_2 - e_1))
    ```

    With `three_phase=True` the phase ends are `e_1`, `2 * pct_start * total_steps - 2` and
    `total_steps - 1`: momentum falls to `base_momentum`, climbs back to `max_momentum` as the
    learning rate comes down symmetrically, then stays at `max_momentum`. These are the
    momentum values of `torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=True)`; after the
    last step the value stays at `max_momentum`.

    Args:
        base_momentum: float in [0, 1), the momentum at the learning-rate peak.
        max_momentum: float in [base_momentum, 1), the momentum at the start and the end.
        total_steps: int >= 2, the length of the cycle.
        pct_start: float in (0, 1), the fraction of steps spent raising the learning rate.
        anneal: "cos" or "linear".
        three_phase: bool, whether to use the symmetric three-phase variant.

    Reference:
        Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
        Learning Rates", 2017; Smith, "A disciplined approach to neural network
        hyper-parameters: Part 1", 2018 (cyclical momentum).
    """

    def __init__(
        self,
        base_momentum,
        max_momentum,
        total_steps,
        pct_start=0.3,
        anneal="cos",
        three_phase=False,
    ):
        self.base_momentum = _validation.in_interval("base_momentum", base_momentum, 0.0, 1.0)
        self.max_momentum = _validation.in_interval(
            "max_momentum", max_momentum, self.base_momentum, 1.0
        )
        self.total_steps = _validation.integer("total_steps", total_steps, minimum=2)
        self.pct_start = _validation.in_interval(
            "pct_start", pct_start, 0.0, 1.0, closed_low=False
        )
        self.anneal = _validation.choice("anneal", anneal, _common.ANNEAL_CHOICES)
        if not isinstance(three_phase, bool):
            raise TypeError(f"`three_phase` must be a bool, got {three_phase!r}")
        self.three_phase = three_phase
        self._phase_ends = one_cycle_phase_ends(self.total_steps, self.pct_start, three_phase)

    def __call__(self, step):
        high, low = self.max_momentum, self.base_momentum
        values = [high, low, high, high] if self.three_phase else [high, low, high]
        return _common.piecewise_anneal(
            _common.as_step(step), self._phase_ends, values, self.anneal
        )

    def value_range(self):
        return (min(self.base_momentum, self.max_momentum),
                max(self.base_momentum, self.max_momentum))

    def get_config(self):
        return {
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "anneal": self.anneal,
            "three_phase": self.three_phase,
        }
