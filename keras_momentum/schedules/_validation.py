"""Argument checks shared by the schedules.

Every check names the argument, shows the value received and says what is allowed, and returns
the value converted to a plain Python type so that `get_config` stays JSON-serialisable.
"""

import math
import numbers

import keras


def real(name, value):
    """A finite real number, returned as a Python float; a scalar float `keras.Variable` is
    checked on its current value and returned as it is (it stays live)."""
    if isinstance(value, keras.Variable):
        if tuple(value.shape) != () or "float" not in str(value.dtype):
            raise TypeError(f"`{name}` must be a scalar float variable, got {value!r}")
        real(name, float(keras.ops.convert_to_numpy(value)))
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number, got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    return value


def non_negative(name, value):
    value = real(name, value)
    if _current(value) < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value!r}")
    return value


def positive(name, value):
    value = real(name, value)
    if _current(value) <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}")
    return value


def in_interval(name, value, low, high, closed_low=True, closed_high=False):
    """A real number inside the interval, e.g. `[0, 1)` with the defaults."""
    value = real(name, value)
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}")
    return value


def integer(name, value, minimum):
    """An integer (Python or NumPy, not bool) >= `minimum`, returned as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer, got {value!r} of type {type(value).__name__}"
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return value


def increasing_integers(name, values, minimum):
    """A non-empty sequence of strictly increasing integers >= `minimum`, returned as a list."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a list of integers, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"`{name}` must not be empty, got {values!r}")
    checked = [integer(f"{name}[{index}]", value, minimum) for index, value in enumerate(values)]
    for before, after in zip(checked, checked[1:]):
        if after <= before:
            raise ValueError(f"`{name}` must be strictly increasing, got {checked!r}")
    return checked


def choice(name, value, choices):
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}")
    return value


def _current(value):
    return float(keras.ops.convert_to_numpy(value)) if isinstance(value, keras.Variable) else value
