"""Converting durations given in epochs to optimizer steps."""

import math
import numbers

from keras_momentum.schedules import _validation


def epochs(n, steps_per_epoch):
    """Number of optimizer steps in `n` epochs: `n * steps_per_epoch`, rounded half up.

    Schedules count optimizer updates (Keras passes `optimizer.iterations`, one per batch), so a
    duration in epochs becomes steps by multiplying by the number of batches per epoch.
    `n` may be fractional (`epochs(0.5, 100) == 50`) or a list, for milestones:

    ```python
    steps_per_epoch = len(train_dataset)        # batches per epoch
    StepDecay(0.1, step_size=epochs(30, steps_per_epoch))             # x0.1 every 30 epochs
    MultiStepDecay(0.1, milestones=epochs([30, 60, 80], steps_per_epoch))
    Warmup(CosineDecay(0.1, epochs(85, steps_per_epoch)), epochs(5, steps_per_epoch))
    ```

    Args:
        n: number of epochs >= 0 (int or float), or a list of them.
        steps_per_epoch: int >= 1, optimizer steps (batches) per epoch.

    Returns:
        An int, or a list of ints when `n` is a list.
    """
    steps_per_epoch = _validation.integer("steps_per_epoch", steps_per_epoch, minimum=1)
    if isinstance(n, (list, tuple)):
        return [_steps(f"n[{index}]", value, steps_per_epoch) for index, value in enumerate(n)]
    return _steps("n", n, steps_per_epoch)


def _steps(name, value, steps_per_epoch):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _validation.integer(name, value, minimum=0) * steps_per_epoch
    value = _validation.non_negative(name, value)
    return int(math.floor(value * steps_per_epoch + 0.5))
