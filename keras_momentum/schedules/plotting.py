"""Drawing schedules with matplotlib."""

import numbers

import keras
import numpy as np

from keras_momentum.schedules import _common
from keras_momentum.schedules.demon_momentum import DemonMomentum
from keras_momentum.schedules.one_cycle_momentum import OneCycleMomentum

MOMENTUM_SCHEDULES = (DemonMomentum, OneCycleMomentum)


def plot(schedules, steps, ax=None, hyperparameter=None):
    """Draws one or several schedules against the optimizer step, with a legend.

    Args:
        schedules: a schedule (or float), a list of them, or a dict mapping a label to each.
            Without a dict, each line is labelled by its class name.
        steps: int `n` (steps `0 .. n - 1`) or an iterable of steps such as a `range`. Each
            step is one eager call, so for long schedules pass a strided `range(0, n, k)`.
        ax: a matplotlib `Axes` to draw on; a new figure is made when `None`.
        hyperparameter: the y-axis label, e.g. "learning rate", "momentum" or
            "weight decay". `None`: "momentum" when every schedule is a momentum schedule
            (`DemonMomentum`, `OneCycleMomentum`), else "learning rate".

    Returns:
        The matplotlib `Figure` holding the axes.
    """
    import matplotlib.pyplot as plt  # imported here so that matplotlib stays optional

    if isinstance(schedules, dict):
        named = [(str(label), schedule) for label, schedule in schedules.items()]
    elif isinstance(schedules, (list, tuple)):
        named = [(type(schedule).__name__, schedule) for schedule in schedules]
    else:
        named = [(type(schedules).__name__, schedules)]
    if not named:
        raise ValueError(f"`schedules` must hold at least one schedule, got {schedules!r}")
    named = [
        (label, _common.check_nested(f"schedules[{label!r}]", schedule))
        for label, schedule in named
    ]
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"`steps` must be >= 1 when given as an int, got {steps!r}")
        steps = range(int(steps))
    steps = list(steps)
    if not steps:
        raise ValueError(f"`steps` must not be empty, got {steps!r}")

    if ax is None:
        _, ax = plt.subplots()
    for label, schedule in named:
        values = [
            float(keras.ops.convert_to_numpy(_common.evaluate(schedule, step)))
            for step in steps
        ]
        ax.plot(np.asarray(steps), np.asarray(values), label=label)
    if hyperparameter is None:
        momentum_only = all(isinstance(schedule, MOMENTUM_SCHEDULES) for _, schedule in named)
        hyperparameter = "momentum" if momentum_only else "learning rate"
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(hyperparameter)
    ax.legend()
    return ax.figure

