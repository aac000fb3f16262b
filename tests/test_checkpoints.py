"""Saving and loading restore every optimizer's state exactly, or fail loudly.

Backend-agnostic. `.keras` files (`model.save` / `keras.models.load_model`) and weights
files (`model.save_weights` / `model.load_weights` into a compiled model) must give back
every optimizer variable bit for bit (update count, learning-rate multiplier, slots,
`nonfinite_steps`, schedule-free and Lookahead state), and training must then continue
exactly as it would have without the round trip. A state saved from a different set of
variables must raise, never be skipped with a warning (Keras's default).
"""

import keras
import numpy as np
import pytest

from keras_momentum.optimizers import diagnostics
from keras import ops

from keras_momentum import optimizers, schedules

OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(
        schedules.Warmup(schedules.CosineDecay(0.05, 30), warmup_steps=3),
        momentum=schedules.Linear(0.5, 0.9, 5), nesterov=True, weight_decay=1e-3,
        skip_nonfinite=True,
    ),
    "qhm": lambda: optimizers.QHM(0.05, momentum=0.9),
    "agg_mo": lambda: optimizers.AggMo(0.05),
    "lars": lambda: optimizers.LARS(0.5, weight_decay=1e-3),
    "schedule_free": lambda: optimizers.ScheduleFreeSGD(0.05, warmup_steps=2),
    "lookahead": lambda: optimizers.Lookahead(optimizers.SGD(0.05, momentum=0.9), sync_period=3),
}


def data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 3)).astype("float32")
    return x, (x @ rng.normal(size=(3, 2))).astype("float32")


def new_model(optimizer, frozen_first_layer=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    )
    model.layers[0].trainable = not frozen_first_layer
    model.compile(optimizer=optimizer, loss="mse")
    return model


def fit(model, epochs):
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)


def innermost(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def trained(name):
    model = new_model(OPTIMIZERS[name]())
    fit(model, 2)
    # A plateau reduction is optimizer state too.
    innermost(model.optimizer).plateau_state.assign([0.3, 0.7, 2.0, 1.0])
    return model


def assert_same_state(restored, original):
    assert len(restored.optimizer.variables) == len(original.optimizer.variables)
    for got, want in zip(restored.optimizer.variables, original.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want), want.path)


def assert_training_continues_alike(restored, original):
    fit(restored, 1)
    fit(original, 1)
    for got, want in zip(restored.get_weights(), original.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert int(ops.convert_to_numpy(restored.optimizer.iterations)) == 12


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_keras_file_restores_optimizer_state_exactly(tmp_path, name):
    original = trained(name)
    original.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert type(restored.optimizer) is type(original.optimizer)
    assert restored.optimizer.get_config() == original.optimizer.get_config()
    np.testing.assert_allclose(
        ops.convert_to_numpy(innermost(restored.optimizer).plateau_state), [0.3, 0.7, 2.0, 1.0]
    )
    assert_same_state(restored, original)
    assert_training_continues_alike(restored, original)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weights_file_restores_optimizer_state_exactly(tmp_path, name):
    original = trained(name)
    original.save_weights(tmp_path / "model.weights.h5")
    restored = new_model(OPTIMIZERS[name]())
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "model.weights.h5")
    assert_same_state(restored, original)
    assert_training_continues_alike(restored, original)


def saved_sgd_weights(tmp_path):
    """The weights file of a trained momentum-SGD model, and its optimizer's variable count."""
    model = new_model(optimizers.SGD(0.05, momentum=0.9))
    fit(model, 1)
    path = tmp_path / "sgd.weights.h5"
    model.save_weights(path)
    return path, len(model.optimizer.variables)


def built(model):
    model.optimizer.build(model.trainable_variables)
    return model


# None: the message must give both variable counts, the saved one and the target's.
MISMATCHES = {
    "optimizer-not-built": (lambda: new_model(optimizers.SGD(0.05, momentum=0.9)), "not built yet"),
    "no-velocities": (lambda: built(new_model(optimizers.SGD(0.05))), None),
    "skip-nonfinite-counter": (
        lambda: built(new_model(optimizers.SGD(0.05, momentum=0.9, skip_nonfinite=True))),
        None,
    ),
    "other-optimizer": (lambda: built(new_model(optimizers.AggMo(0.05))), None),
    "frozen-layer": (
        lambda: built(new_model(optimizers.SGD(0.05, momentum=0.9), frozen_first_layer=True)),
        None,
    ),
    "lookahead": (
        lambda: built(new_model(optimizers.Lookahead(optimizers.SGD(0.05, momentum=0.9)))),
        "Cannot load the state",
    ),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_loading_another_variable_set_raises(tmp_path, case):
    path, saved_count = saved_sgd_weights(tmp_path)
    make, message = MISMATCHES[case]
    model = make()
    if message is None:
        assert len(model.optimizer.variables) != saved_count
        message = f"has {saved_count} variables but this optimizer has {len(model.optimizer.variables)}"
    before = [ops.convert_to_numpy(v) for v in model.optimizer.variables]
    with pytest.raises(ValueError, match=message):
        model.load_weights(path)
    for variable, value in zip(model.optimizer.variables, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def test_loading_under_a_loss_scale_optimizer_raises_when_not_built(tmp_path):
    path, _ = saved_sgd_weights(tmp_path)
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = new_model(optimizers.SGD(0.05, momentum=0.9))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # Keras's wrapper only warns about its own variables; the wrapped optimizer refuses.
    with pytest.warns(UserWarning, match="Skipping variable loading"):
        with pytest.raises(ValueError, match="not built yet"):
            model.load_weights(path)


def test_loading_slots_of_other_shapes_raises():
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    optimizer.build([keras.Variable(np.zeros((3, 2), "float32")), keras.Variable(np.zeros(2, "float32"))])
    store = {str(i): ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
    first_velocity = [v.path for v in optimizer.variables].index(optimizer.velocities[0].path)
    store[str(first_velocity)] = np.zeros((2, 3), "float32")
    other = optimizers.SGD(0.05, momentum=0.9)
    other.build([keras.Variable(np.zeros((3, 2), "float32")), keras.Variable(np.zeros(2, "float32"))])
    with pytest.raises(ValueError, match=r"has shape \(2, 3\) but .* has shape \(3, 2\)"):
        other.load_own_variables(store)


def two_variable_sgd():
    optimizer = optimizers.SGD(0.05, momentum=0.9)
    optimizer.build([keras.Variable(np.zeros((3, 2), "float32")), keras.Variable(np.zeros(2, "float32"))])
    return optimizer


def distinct_store(optimizer):
    """A saved state of `optimizer` whose every entry differs from a fresh one's."""
    return {
        str(i): np.full(v.shape, i + 2, ops.convert_to_numpy(v).dtype)
        for i, v in enumerate(optimizer.variables)
    }


def test_a_failed_load_changes_nothing():
    store = distinct_store(two_variable_sgd())
    last = str(len(store) - 1)  # the last velocity: every other entry comes before it
    store[last] = np.zeros((5,), "float32")
    other = two_variable_sgd()
    before = [ops.convert_to_numpy(v) for v in other.variables]
    with pytest.raises(ValueError, match=r"has shape \(5,\)"):
        other.load_own_variables(store)
    for variable, value in zip(other.variables, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def test_diagnostics_buffers_are_never_saved():
    # The same optimizer state, with and without a recorder attached.
    plain = two_variable_sgd()
    recording = two_variable_sgd()
    diagnostics.attach(recording).request("test", ["gradient_norms"], 1)
    assert len(recording.variables) > len(plain.variables)
    stores = []
    for optimizer in (plain, recording):
        store = {}
        optimizer.save_own_variables(store)
        stores.append(store)
    assert sorted(stores[0]) == sorted(stores[1])
    for key in stores[0]:
        np.testing.assert_array_equal(stores[0][key], stores[1][key])
    recording.load_own_variables(stores[0])  # loads while attached
