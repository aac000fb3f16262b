"""Putting another learning-rate object in an optimizer, and tracing the train step anew."""

import contextlib


def innermost(optimizer):
    """The optimizer that makes the updates, looking through `inner_optimizer` wrappers."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def set_learning_rate_object(optimizer, learning_rate):
    """Sets the float variable, schedule or callable `optimizer` reads its rate from.

    Not the `learning_rate` setter: that one untracks a learning-rate variable replaced by
    a schedule, removing it from `optimizer.variables` (and so from every checkpoint).
    """
    object.__setattr__(optimizer, "_learning_rate", learning_rate)


@contextlib.contextmanager
def own_train_step(model):
    """Inside the block, `model.train_step` is a function of its own.

    A train function built inside the block (`make_train_function`, or `fit` after
    `model.train_function = None`) is then traced anew: `jax.jit` shares its traces between
    wrappers of one function, so without this JAX would keep running the step traced with
    the learning-rate object the optimizer had before.
    """
    train_step = model.train_step
    shadowed = "train_step" in vars(model)

    def fresh_train_step(*args, **kwargs):
        return train_step(*args, **kwargs)

    model.train_step = fresh_train_step
    try:
        yield
    finally:
        if shadowed:
            model.train_step = train_step
        else:
            del model.train_step


def retrace(model):
    """Builds the model's train function again now, keeping a diagnostics logger's switch."""
    from keras_momentum.callbacks._train_function_switch import TrainFunctionSwitch  # noqa: PLC0415

    current = model.train_function
    with own_train_step(model):
        model.make_train_function(force=True)
    if isinstance(current, TrainFunctionSwitch):
        # The loggers' switch keeps standing in for the train function: it now calls the new
        # trace, and traces its statistics-free twin again when it needs it.
        current.recording, current.plain = model.train_function, None
        model.train_function = current
