"""Helpers shared by the schedules: step conversion, nested schedules, annealing curves."""

import functools
import inspect
import math

import keras
from keras import ops

from keras_momentum.schedules import _validation

ANNEAL_CHOICES = ("cos", "linear")


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base of this package's schedules.

    Every schedule takes `name=` (as Keras's do) and its configuration carries it; `repr`
    shows the class and its arguments, e.g. `Linear(initial_value=0.9, ...)`;
    `from_config` rejects unknown keys by name and value; `value_range()` gives the
    interval `(low, high)` that holds every value the schedule takes, which optimizers
    check bounded hyperparameters (momentum) against. A `keras.Variable` given as a
    starting rate stays live (assigning it changes the schedule); the configuration holds
    its value.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init, get_config = cls.__dict__.get("__init__"), cls.__dict__.get("get_config")
        if init is not None:
            @functools.wraps(init)
            def __init__(self, *args, name=None, **kwargs):
                init(self, *args, **kwargs)
                if name is not None and not isinstance(name, str):
                    raise TypeError(f"`name` must be a str or None, got {name!r}")
                self.name = name

            signature = inspect.signature(init)
            __init__.__signature__ = signature.replace(parameters=[
                *signature.parameters.values(),
                inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None)])
            cls.__init__ = __init__
        if get_config is not None:
            @functools.wraps(get_config)
            def wrapped_get_config(self):
                config = {key: _plain(value) for key, value in get_config(self).items()}
                config["name"] = getattr(self, "name", None)
                return config

            cls.get_config = wrapped_get_config

    def value_range(self):
        """`(low, high)`: every value of the schedule lies in `[low, high]`."""
        raise NotImplementedError

    def __repr__(self):
        # Arguments are the configuration's keys; nested schedules print as themselves, not as
        # their serialised dicts.
        config = self.get_config()
        if config.get("name") is None:
            config.pop("name", None)
        return _call_repr(type(self).__name__, {
            name: getattr(self, name, value) for name, value in config.items()})

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return cls(**config)


def value_range(schedule):
    """`(low, high)` of a schedule of this package or a constant; None when unknown."""
    if isinstance(schedule, Schedule):
        return schedule.value_range()
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return None
    value = _plain(schedule)
    return value, value


def hull(*ranges):
    """The smallest interval holding all `ranges` (None, unknown, if any is)."""
    if any(r is None for r in ranges):
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _plain(value):
    if isinstance(value, keras.Variable):
        return float(keras.ops.convert_to_numpy(value))
    return value

    @classmethod
    def from_config(cls, config):
        check_config_keys(cls, config)
        return cls(**config)


def _call_repr(name, arguments):
    return f"{name}({', '.join(f'{key}={_value_repr(value)}' for key, value in arguments.items())})"


def _value_repr(value):
    if isinstance(value, keras.Variable):
        return repr(_plain(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_repr(item) for item in value) + "]"
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) and not isinstance(
            value, Schedule):
        # Keras's own schedules print as `<... object at 0x...>`; show their arguments.
        return _call_repr(f"keras.optimizers.schedules.{type(value).__name__}", value.get_config())
    return repr(value)


def check_config_keys(cls, config):
    """Raises `ValueError` naming every key of `config` that `cls.__init__` does not take."""
    allowed = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = {key: value for key, value in config.items() if key not in allowed}
    if unknown:
        raise ValueError(
            f"Unknown key(s) in the configuration of {cls.__name__}: {unknown!r}; the keys are "
            f"{', '.join(repr(name) for name in allowed)}"
        )


def as_step(step):
    """Converts `step` (Python number, NumPy scalar, tensor or variable) to a float32 scalar."""
    if isinstance(step, (str, bytes)):
        raise TypeError(f"`step` must be a number or a numeric scalar tensor, got {step!r}")
    step = ops.convert_to_tensor(step)
    try:
        rank = len(step.shape)
    except (TypeError, ValueError):  # unknown rank while tracing: nothing to check yet
        rank = None
    if rank is not None and rank != 0:
        raise ValueError(
            f"`step` must be a scalar (the optimizer's iteration count), "
            f"got a tensor of shape {tuple(step.shape)}"
        )
    return ops.cast(step, "float32")


def check_nested(name, schedule):
    """A nested schedule: a `LearningRateSchedule` or a real number (a constant)."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    try:
        return _validation.real(name, schedule)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a `keras.optimizers.schedules.LearningRateSchedule` or a float, "
            f"got {schedule!r} of type {type(schedule).__name__}"
        ) from None


def evaluate(schedule, step):
    """Value of a nested schedule (or constant) at `step`, as a float32 tensor."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return ops.cast(schedule(step), "float32")
    return ops.convert_to_tensor(schedule, "float32")


def serialize_nested(schedule):
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return keras.saving.serialize_keras_object(schedule)
    return schedule


def deserialize_nested(config):
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    return config


def anneal(start, end, fraction, kind):
    """Goes from `start` (fraction 0) to `end` (fraction 1) along a half cosine or a line."""
    if kind == "cos":
        return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))
    return start + (end - start) * fraction


def piecewise_anneal(step, phase_ends, values, kind):
    """Joins annealing phases the way torch's `OneCycleLR` does.

    Phase `i` runs from `phase_ends[i - 1]` (0 for the first phase) to `phase_ends[i]` and anneals
    from `values[i]` to `values[i + 1]`. A step belongs to the first phase whose end it does not
    pass; steps after the last end stay at `values[-1]`.
    """
    starts = [0.0] + list(phase_ends[:-1])
    result = None
    for index in reversed(range(len(phase_ends))):
        start, end = starts[index], phase_ends[index]
        fraction = ops.clip((step - start) / (end - start), 0.0, 1.0)
        value = anneal(values[index], values[index + 1], fraction, kind)
        result = value if result is None else ops.where(step <= end, value, result)
    return result
