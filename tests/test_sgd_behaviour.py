"""SGD in Keras workflows: validation, serialisation, fit, save/load, sparse, precision."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_momentum.optimizers import SGD


class Halving(keras.optimizers.schedules.LearningRateSchedule):
    """0.1·0.5^(t//10): a schedule defined here, independent of keras_momentum.schedules."""

    def __init__(self, start=0.1):
        self.start = start

    def __call__(self, step):
        return self.start * ops.power(0.5, ops.floor(ops.cast(step, "float32") / 10.0))

    def get_config(self):
        return {"start": self.start}


keras.saving.register_keras_serializable(package="tests")(Halving)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": math.inf}, "learning_rate"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": 0.9, "dampening": 1.5, "formulation": "pytorch"}, "dampening"),
        ({"momentum": 0.9, "dampening": -0.5, "formulation": "pytorch"}, "dampening"),
        ({"nesterov": True}, "nesterov"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1, "formulation": "pytorch"}, "nesterov"),
        ({"momentum": 0.9, "dampening": 0.1}, "dampening"),
        ({"formulation": "tf"}, "formulation"),
        ({"weight_decay": 0.1, "weight_decay_mode": "l2"}, "weight_decay_mode"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"fused": True}, "fused"),
        ({"nesterov": "yes", "momentum": 0.9}, "nesterov"),
    ],
)
def test_invalid_arguments_name_argument_and_value(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`") as info:
        SGD(**kwargs)
    bad = kwargs.get(argument)
    if isinstance(bad, (float, str)) and not (isinstance(bad, float) and math.isnan(bad)):
        assert repr(bad) in str(info.value) or str(bad) in str(info.value)


def test_choices_are_listed():
    with pytest.raises(ValueError, match="'keras', 'pytorch'"):
        SGD(formulation="tf")
    with pytest.raises(ValueError, match="'decoupled', 'coupled'"):
        SGD(weight_decay_mode="l1")


def test_config_round_trip_with_floats_and_schedules():
    for optimizer in (
        SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, clipnorm=1.0, name="opt"),
        SGD(Halving(), momentum=Halving(0.9), weight_decay=Halving(1e-3), formulation="pytorch",
            dampening=0.2, weight_decay_mode="coupled", gradient_accumulation_steps=2),
    ):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is SGD
        config, again = optimizer.get_config(), restored.get_config()
        assert config == again
        assert config["momentum"] == again["momentum"]


def _model(seed=0, vocabulary=None):
    keras.utils.set_random_seed(seed)
    if vocabulary:
        return keras.Sequential([
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(vocabulary, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ])
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])


def _data(n=128, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x @ rng.normal(size=(8, 1))).astype("float32")


def test_fit_reduces_loss():
    x, y = _data()
    model = _model()
    model.compile(SGD(0.02, momentum=0.9, nesterov=True), "mse")
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.3 * history[0]


def test_velocities_follow_variables_and_are_named_after_paths():
    model = _model()
    optimizer = SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    assert len(optimizer.velocities) == len(model.trainable_variables)
    for velocity, variable in zip(optimizer.velocities, model.trainable_variables):
        assert velocity.shape == variable.shape
        assert velocity.dtype == "float32"
        assert variable.path.replace("/", "_") in velocity.name
    plain = SGD(0.01)
    plain.build(model.trainable_variables)
    assert plain.velocities == []


@pytest.mark.tensorflow
def test_jit_and_graph_give_the_same_weights():
    x, y = _data()
    weights = {}
    for jit in (False, True):
        model = _model()
        model.compile(SGD(Halving(), momentum=0.9, weight_decay=1e-3), "mse", jit_compile=jit)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
        weights[jit] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow
def test_schedules_never_retrace():
    import tensorflow as tf

    traces = []
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = SGD(Halving(), momentum=Halving(0.9), weight_decay=Halving(0.01))
    optimizer.build([variable])

    @tf.function
    def step(gradient):
        traces.append(1)
        optimizer.apply([gradient], [variable])

    for _ in range(25):
        step(tf.ones(3))
    assert len(traces) == 1
    assert int(optimizer.iterations) == 25


def test_save_load_continue_equals_uninterrupted(tmp_path):
    x, y = _data()
    optimizer_kwargs = dict(learning_rate=Halving(), momentum=0.9, nesterov=True, weight_decay=1e-3)

    reference = _model()
    reference.compile(SGD(**optimizer_kwargs), "mse")
    reference.fit(x, y, epochs=4, batch_size=32, verbose=0, shuffle=False)

    interrupted = _model()
    interrupted.compile(SGD(**optimizer_kwargs), "mse")
    interrupted.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    interrupted.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(restored.optimizer, SGD)
    assert int(restored.optimizer.iterations) == 8
    for a, b in zip(restored.optimizer.velocities, interrupted.optimizer.velocities):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    restored.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(restored.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_loading_state_of_another_variable_set_fails(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(SGD(0.01, momentum=0.9), "mse")
    model.fit(x, y, epochs=1, verbose=0)
    store = {str(i): ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    other = SGD(0.01, momentum=0.9)
    other.build(model.trainable_variables[:2])
    with pytest.raises(ValueError, match="saved state has"):
        other.load_own_variables(store)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sparse_gradients_match_keras_sgd(momentum):
    """Embedding gradients arrive as IndexedSlices on TensorFlow; compare with Keras's SGD."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(64, 3)).astype("int32")  # rows 5..9 are never looked up
    y = rng.normal(size=(64, 1)).astype("float32")
    weights = []
    for optimizer in (SGD(0.05, momentum=momentum), keras.optimizers.SGD(0.05, momentum=momentum)):
        model = _model(vocabulary=10)
        before = ops.convert_to_numpy(model.layers[0].embeddings)
        model.compile(optimizer, "mse")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        after = ops.convert_to_numpy(model.layers[0].embeddings)
        np.testing.assert_array_equal(after[5:], before[5:])
        assert not np.allclose(after[:5], before[:5])
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_trains_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    x, y = _data()
    model = _model()
    model.compile(SGD(0.02, momentum=0.9), "mse")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        inner = model.optimizer.inner_optimizer
    else:
        inner = model.optimizer
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert all(v.dtype == "float32" for v in inner.velocities)


def test_keras_base_arguments_keep_working():
    variable = keras.Variable(np.zeros(2, "float32"))
    gradient = ops.convert_to_tensor([3.0, 4.0], "float32")
    clipped = SGD(1.0, clipnorm=1.0)
    clipped.apply([gradient], [variable])
    np.testing.assert_allclose(ops.convert_to_numpy(variable), [-0.6, -0.8], rtol=1e-6)

    accumulated = keras.Variable(np.zeros(2, "float32"))
    optimizer = SGD(1.0, momentum=0.5, gradient_accumulation_steps=2)
    optimizer.apply([ops.convert_to_tensor([1.0, 1.0], "float32")], [accumulated])
    np.testing.assert_array_equal(ops.convert_to_numpy(accumulated), [0.0, 0.0])
    optimizer.apply([ops.convert_to_tensor([3.0, 3.0], "float32")], [accumulated])
    np.testing.assert_allclose(ops.convert_to_numpy(accumulated), [-2.0, -2.0])
    assert int(optimizer.iterations) == 1

    scaled = keras.Variable(np.zeros(2, "float32"))
    SGD(1.0, loss_scale_factor=4.0).apply([ops.convert_to_tensor([4.0, 8.0], "float32")], [scaled])
    np.testing.assert_allclose(ops.convert_to_numpy(scaled), [-1.0, -2.0])


def test_exclude_from_weight_decay_is_honoured():
    decayed = keras.Variable(np.ones(2, "float32"), name="kernel")
    kept = keras.Variable(np.ones(2, "float32"), name="bias")
    optimizer = SGD(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    zero = ops.zeros((2,))
    optimizer.apply([zero, zero], [decayed, kept])
    np.testing.assert_allclose(ops.convert_to_numpy(decayed), [0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(kept), [1.0, 1.0])


def test_skip_nonfinite_leaves_state_untouched():
    variable = keras.Variable(np.ones(2, "float32"))
    optimizer = SGD(0.1, momentum=0.9, skip_nonfinite=True)
    optimizer.apply([ops.convert_to_tensor([1.0, 1.0], "float32")], [variable])
    weights = ops.convert_to_numpy(variable)
    velocity = ops.convert_to_numpy(optimizer.velocities[0])
    optimizer.apply([ops.convert_to_tensor([np.nan, 1.0], "float32")], [variable])
    np.testing.assert_array_equal(ops.convert_to_numpy(variable), weights)
    np.testing.assert_array_equal(ops.convert_to_numpy(optimizer.velocities[0]), velocity)
    assert int(optimizer.iterations) == 1
    assert int(optimizer.nonfinite_steps) == 1
    optimizer.apply([ops.convert_to_tensor([1.0, 1.0], "float32")], [variable])
    assert int(optimizer.iterations) == 2
