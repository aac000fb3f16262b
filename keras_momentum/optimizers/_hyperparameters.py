"""Validation, evaluation and serialisation of hyperparameters that may be schedules.

A hyperparameter here is a Python number or a
`keras.optimizers.schedules.LearningRateSchedule`. Schedules are evaluated at the
optimizer's update count inside the compiled step, so changing values over time never
retraces the train function.
"""

import math

import keras
from keras import ops

Schedule = keras.optimizers.schedules.LearningRateSchedule


def is_schedule(value):
    return isinstance(value, Schedule)


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Returns `value` as a float, or raises naming `name`, `value` and the allowed range."""
    allowed = _describe_range(low, high, low_open, high_open)
    if isinstance(value, (bool, str, bytes)):
        # float() would accept True and "0.9"; a flag or a string here is a mistake.
        raise TypeError(
            f"`{name}` must be a number {allowed}, got {value!r} of type {type(value).__name__}"
        )
    if not isinstance(value, (int, float)):
        # Keras tensors and NumPy scalars are numbers too; accept scalars only.
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"`{name}` must be a number {allowed}, got {value!r} of type "
                f"{type(value).__name__}"
            ) from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number {allowed}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")
    return value


def check_hyperparameter(name, value, low=None, high=None, low_open=False, high_open=False):
    """Like `check_number`, but a `LearningRateSchedule` is accepted as it is.

    A schedule of this package knows the interval of its values (`value_range()`), which
    must lie inside the allowed range. Other schedules cannot be checked: their values are
    used as they come.
    """
    if is_schedule(value):
        from keras_momentum.schedules import _common  # noqa: PLC0415 (schedules import us)

        found = _common.value_range(value)
        if found is not None:
            try:
                for bound in found:
                    check_number(name, bound, low, high, low_open, high_open)
            except ValueError:
                allowed = _describe_range(low, high, low_open, high_open)
                raise ValueError(
                    f"`{name}` must be {allowed}, got {value!r}, whose values span "
                    f"[{found[0]:g}, {found[1]:g}]"
                ) from None
        return value
    if isinstance(value, dict):
        raise TypeError(
            f"`{name}` must be a number or a LearningRateSchedule instance, got a dict "
            f"{value!r}; deserialise it first with keras.saving.deserialize_keras_object"
        )
    return check_number(name, value, low, high, low_open, high_open)


def check_choice(name, value, choices):
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}, got {value!r}")
    return value


def evaluate(value, step):
    """The value at optimizer update `step` as float32 (a schedule) or the number itself."""
    if is_schedule(value):
        return ops.cast(value(step), "float32")
    return value


def serialize(value):
    if is_schedule(value):
        return keras.saving.serialize_keras_object(value)
    return value


def deserialize(value, custom_objects=None):
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value, custom_objects=custom_objects)
    return value


def _describe_range(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""
