"""`instrument()` gives Keras's own optimizers the multiplier and statistics, and round-trips."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_momentum.optimizers import Lookahead, instrument
from keras_momentum.optimizers.instrumentation import InstrumentationMixin


def test_instrumented_adam_keeps_config_and_trains_identically():
    plain = keras.optimizers.Adam(1e-2, beta_1=0.8, global_clipnorm=1.0)
    instrumented = instrument(plain)
    assert isinstance(instrumented, keras.optimizers.Adam)
    assert isinstance(instrumented, InstrumentationMixin)
    assert instrumented.get_config() == plain.get_config()
    values = []
    for optimizer in (plain, instrumented):
        variable = keras.Variable(np.ones(3, "float32"))
        for step in range(5):
            optimizer.apply([ops.convert_to_tensor([1.0, -2.0, 3.0 * step], "float32")], [variable])
        values.append(ops.convert_to_numpy(variable))
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6)


def test_plateau_factor_scales_a_scheduled_learning_rate():
    optimizer = instrument(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.5, 10, 1.0)))
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer.build([variable])
    optimizer.plateau_state.assign([0.1, np.nan, 0.0, 0.0])
    optimizer.apply([ops.ones((2,))], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), [-0.05, -0.05], rtol=1e-6)


def test_saved_model_loads_without_custom_objects(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(instrument(keras.optimizers.AdamW(1e-3)), "mse")
    model.fit(np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert type(restored.optimizer).__name__ == "InstrumentedAdamW"
    assert int(restored.optimizer.iterations) == 1


@pytest.mark.parametrize("wrapper", [
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()),
    lambda: Lookahead(keras.optimizers.Adam()),
])
def test_wrappers_are_rejected(wrapper):
    with pytest.raises(TypeError, match="instrument the optimizer it wraps"):
        instrument(wrapper())


def test_wrappers_of_instrumented_optimizers_are_returned_as_they_are():
    wrapped = Lookahead(instrument(keras.optimizers.Adam()))
    assert instrument(wrapped) is wrapped


def test_built_and_foreign_objects_are_rejected():
    built = keras.optimizers.Adam()
    built.build([keras.Variable(np.ones(2, "float32"))])
    with pytest.raises(ValueError, match="already built"):
        instrument(built)
    with pytest.raises(TypeError, match="`optimizer` must be"):
        instrument("adam")
