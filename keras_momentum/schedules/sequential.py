"""Sequential join: runs schedules one after another, each from its own step 0."""

import keras
from keras import ops

from keras_momentum.schedules import _common, _validation


@keras.saving.register_keras_serializable(package="keras_momentum")
class Sequential(_common.Schedule):
    """Joins schedules at the given boundaries; each part counts steps from its own start.

    With boundaries `b_1 < ... < b_n` (and `b_0 = 0`):

    ```
    lr(t) = schedules[k](t - b_k)    for b_k <= t < b_(k+1)
    ```

    This is how `torch.optim.lr_scheduler.SequentialLR(schedulers, milestones=boundaries)`
    behaves. The join is continuous only where a part ends on the value the next one starts at;
    nothing here enforces that.

    Args:
        schedules: non-empty list of `LearningRateSchedule`s or floats (constant parts).
        boundaries: strictly increasing list of ints >= 1, one fewer than `schedules`; the
            step at which each part after the first begins.

    Reference:
        optax `join_schedules`; PyTorch `SequentialLR`.
    """

    def __init__(self, schedules, boundaries):
        if isinstance(schedules, (str, bytes)) or not hasattr(schedules, "__iter__"):
            raise TypeError(f"`schedules` must be a list of schedules, got {schedules!r}")
        schedules = list(schedules)
        if not schedules:
            raise ValueError(f"`schedules` must not be empty, got {schedules!r}")
        self.schedules = [
            _common.check_nested(f"schedules[{index}]", schedule)
            for index, schedule in enumerate(schedules)
        ]
        if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
            raise TypeError(f"`boundaries` must be a list of integers, got {boundaries!r}")
        boundaries = list(boundaries)
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"`boundaries` must have len(schedules) - 1 = {len(schedules) - 1} entries, "
                f"got {len(boundaries)}: {boundaries!r}"
            )
        self.boundaries = (
            _validation.increasing_integers("boundaries", boundaries, minimum=1)
            if boundaries
            else []
        )

    def __call__(self, step):
        step = _common.as_step(step)
        value = _common.evaluate(self.schedules[0], step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            later = _common.evaluate(schedule, ops.maximum(step - boundary, 0.0))
            value = ops.where(step >= boundary, later, value)
        return value

    def value_range(self):
        return _common.hull(*[_common.value_range(s) for s in self.schedules])

    def get_config(self):
        return {
            "schedules": [_common.serialize_nested(schedule) for schedule in self.schedules],
            "boundaries": list(self.boundaries),
        }

    @classmethod
    def from_config(cls, config):
        _common.check_config_keys(cls, config)
        config = dict(config)
        config["schedules"] = [_common.deserialize_nested(item) for item in config["schedules"]]
        return cls(**config)
