"""`instrument()`: Keras's own optimizers with this package's multiplier and statistics.

It returns an equivalent optimizer of a registered subclass (`keras_momentum>InstrumentedAdam`,
...), so models saved with it load without `custom_objects`.
"""

import keras

from keras_momentum.optimizers.instrumentation import InstrumentationMixin

_INSTRUMENTED = {}


def instrumented_class(optimizer_class):
    """The registered subclass of `optimizer_class` that carries `InstrumentationMixin`."""
    if issubclass(optimizer_class, InstrumentationMixin):
        return optimizer_class
    if optimizer_class not in _INSTRUMENTED:
        name = f"Instrumented{optimizer_class.__name__}"
        subclass = type(
            name,
            (InstrumentationMixin, optimizer_class),
            {
                "__module__": __name__,
                "__doc__": f"`{optimizer_class.__name__}` with keras_momentum's "
                "learning-rate multiplier and statistics recording.",
            },
        )
        keras.saving.register_keras_serializable(package="keras_momentum", name=name)(subclass)
        globals()[name] = subclass  # so that pickle finds the class by name
        _INSTRUMENTED[optimizer_class] = subclass
    return _INSTRUMENTED[optimizer_class]


def instrument(optimizer):
    """Returns an equivalent, unbuilt copy of a Keras optimizer that records statistics.

    Use it for built-in optimizers (`keras.optimizers.Adam`, `SGD`, `AdamW`, ...) so that
    `GradientNormLogger`, `LearningRateLogger` and `ReduceLROnPlateau` work with them.
    Optimizers of this package, and wrappers (`Lookahead`, `LossScaleOptimizer`) around
    an instrumented optimizer, are returned as they are.

    Example: `model.compile(optimizer=instrument(keras.optimizers.Adam(1e-3)), ...)`.
    """
    if isinstance(optimizer, InstrumentationMixin):
        return optimizer
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"`optimizer` must be a keras.optimizers.Optimizer instance, got {optimizer!r}"
        )
    if hasattr(optimizer, "inner_optimizer"):
        inner = optimizer.inner_optimizer
        while hasattr(inner, "inner_optimizer"):
            inner = inner.inner_optimizer
        if isinstance(inner, InstrumentationMixin):
            return optimizer  # the optimizer making the updates already records
        raise TypeError(
            f"`optimizer` is a {type(optimizer).__name__} wrapping another optimizer; "
            "instrument the optimizer it wraps before wrapping it (compile() wraps in a "
            "LossScaleOptimizer automatically under mixed_float16)"
        )
    if optimizer.built:
        raise ValueError(
            f"`optimizer` {optimizer.name!r} is already built; instrument it before "
            "compiling or training"
        )
    return instrumented_class(type(optimizer)).from_config(optimizer.get_config())


for _name in (
    "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta",
    "Adafactor", "Ftrl", "Lion", "Lamb", "Muon",
):
    if hasattr(keras.optimizers, _name):
        instrumented_class(getattr(keras.optimizers, _name))
