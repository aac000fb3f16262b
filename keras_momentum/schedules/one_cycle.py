"""The 1cycle learning-rate policy."""

import keras

from keras_momentum.schedules import _common, _validation
from keras_momentum.schedules.one_cycle_momentum import OneCycleMomentum, one_cycle_phase_ends


@keras.saving.register_keras_serializable(package="keras_momentum")
class OneCycle(_common.Schedule):
    """1cycle: one rise to `max_learning_rate` and one long fall far below the start.

    With `initial = max_learning_rate / div_factor`, `final = initial / final_div_factor`,
    `e_1 = pct_start * total_steps - 1`, `e_2 = total_steps - 1` and the annealing curve
    `A(start, end, p)` (cosine: `end + (start - end) * (1 + cos(pi p)) / 2`; linear:
    `start + (end - start) * p`):

    ```
    t <= e_1:        A(initial, max_learning_rate, t / e_1)
    e_1 < t <= e_2:  A(max_learning_rate, final, (t - e_1) / (e_2 - e_1))
    t > e_2:         final
    ```

    With `three_phase=True` the phases end at `e_1`, `2 * pct_start * total_steps - 2` and
    `total_steps - 1`, going `initial -> max -> initial -> final`. The phase ends are torch's, so
    for `t < total_steps` the values equal `torch.optim.lr_scheduler.OneCycleLR` with the same
    arguments. Deliberate difference: torch refuses steps past `total_steps`; this schedule
    holds `final` there. `momentum_schedule()` gives the matching inverse momentum cycle.

    Args:
        max_learning_rate: float > 0, the peak.
        total_steps: int >= 2, the length of the cycle in optimizer steps.
        pct_start: float in (0, 1), the fraction of steps spent rising.
        div_factor: float > 0, `initial = max_learning_rate / div_factor`.
        final_div_factor: float > 0, `final = initial / final_div_factor`.
        anneal: "cos" or "linear".
        three_phase: bool, whether to use the symmetric three-phase variant.

    Reference:
        Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
        Learning Rates", 2017.
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        anneal="cos",
        three_phase=False,
    ):
        self.max_learning_rate = _validation.positive("max_learning_rate", max_learning_rate)
        self.total_steps = _validation.integer("total_steps", total_steps, minimum=2)
        self.pct_start = _validation.in_interval(
            "pct_start", pct_start, 0.0, 1.0, closed_low=False
        )
        self.div_factor = _validation.positive("div_factor", div_factor)
        self.final_div_factor = _validation.positive("final_div_factor", final_div_factor)
        self.anneal = _validation.choice("anneal", anneal, _common.ANNEAL_CHOICES)
        if not isinstance(three_phase, bool):
            raise TypeError(f"`three_phase` must be a bool, got {three_phase!r}")
        self.three_phase = three_phase
        self._phase_ends = one_cycle_phase_ends(self.total_steps, self.pct_start, three_phase)

    def momentum_schedule(self, base_momentum=0.85, max_momentum=0.95):
        """The inverse momentum cycle over the same phases, as a serialisable schedule.

        Pass it as `momentum=` to an optimizer of this package, next to this schedule as
        `learning_rate=`.
        """
        return OneCycleMomentum(
            base_momentum,
            max_momentum,
            total_steps=self.total_steps,
            pct_start=self.pct_start,
            anneal=self.anneal,
            three_phase=self.three_phase,
        )

    def __call__(self, step):
        peak = self.max_learning_rate
        initial = peak / self.div_factor
        final = initial / self.final_div_factor
        values = [initial, peak, initial, final] if self.three_phase else [initial, peak, final]
        return _common.piecewise_anneal(
            _common.as_step(step), self._phase_ends, values, self.anneal
        )

    def value_range(self):
        peak = _common._plain(self.max_learning_rate)
        return peak / self.div_factor / self.final_div_factor, peak

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "three_phase": self.three_phase,
        }
