"""Our optimizers beside `keras.optimizers.SGD` under Keras's own machinery.

Each scenario runs on Keras's SGD and on ours, with the same model and data, and compares
values, exceptions and variable counts: Keras's callbacks, saving before training, pickling,
`MultiOptimizer`. Runs on every backend.
"""

import copy
import pickle

import keras
import numpy as np
import pytest
from _scores import Inject

from keras_momentum import optimizers, schedules
from keras_momentum.callbacks import ReduceLROnPlateau


def model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    return model, x, x[:, :1] - x[:, 1:2]


def train(optimizer, callbacks, epochs):
    model, x, y = model_and_data()
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)
    return model, history.history


def both(**kwargs):
    return keras.optimizers.SGD(**kwargs), optimizers.SGD(**kwargs)


def test_learning_rate_is_keras_variable_with_a_float_rate():
    theirs, ours = both(learning_rate=0.05, momentum=0.9)
    assert isinstance(ours.learning_rate, keras.Variable)
    ours.learning_rate.assign(0.02)
    theirs.learning_rate.assign(0.02)
    assert float(ours.learning_rate.value) == float(theirs.learning_rate.value)


def test_keras_reduce_lr_on_plateau_and_scheduler_act_on_ours_as_on_keras():
    scores = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]

    def callbacks():
        # The scheduler returns the rate it is given: a plateau cut must not compound.
        return [Inject(scores),
                keras.callbacks.ReduceLROnPlateau("score", 0.5, patience=1, mode="min"),
                keras.callbacks.LearningRateScheduler(lambda epoch, rate: rate)]

    results = []
    for optimizer in both(learning_rate=0.05, momentum=0.9):
        model, history = train(optimizer, callbacks(), len(scores))
        results.append((history["learning_rate"], model.get_weights()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-7)
    assert results[0][0][-1] == pytest.approx(0.05 * 0.5**4, rel=1e-6)
    for ours, theirs in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_our_reducer_matches_keras_on_a_float_rate_including_weights():
    scores = [1.0, 0.9, 0.9, 0.9, 0.5, 0.5]
    weights = []
    for reducer in (keras.callbacks.ReduceLROnPlateau, ReduceLROnPlateau):
        model, history = train(optimizers.SGD(0.05, momentum=0.9),
                               [Inject(scores), reducer("score", 0.5, patience=1, mode="min")],
                               len(scores))
        weights.append(model.get_weights())
        assert float(model.optimizer.learning_rate.value) == pytest.approx(0.05 / 8)
    for ours, theirs in zip(*weights):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("when", ["compiled", "trained"])
@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: optimizers.SGD(0.1, momentum=0.9),
    lambda: optimizers.instrument(keras.optimizers.Adam(0.01)),
], ids=["keras", "ours", "instrumented_adam"])
def test_save_and_load_before_and_after_training(tmp_path, make, when):
    model, x, y = model_and_data()
    model.compile(optimizer=make(), loss="mse")
    if when == "trained":
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    saved = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    if loaded.optimizer.built:
        restored = [np.asarray(keras.ops.convert_to_numpy(v)) for v in loaded.optimizer.variables]
        for got, want in zip(restored, saved):
            np.testing.assert_array_equal(got, want)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)  # and it trains on
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_variable_counts_are_kerass_plus_the_plateau_state():
    for kwargs, slots in (({"learning_rate": 0.5}, 0), ({"learning_rate": 0.5, "momentum": 0.9}, 1)):
        theirs, ours = both(**kwargs)
        for optimizer in (theirs, ours):
            optimizer.build([keras.Variable(np.zeros(3, "float32"))])
        assert len(theirs.variables) == 2 + slots
        assert len(ours.variables) == len(theirs.variables) + 1
        assert ours.variables[-1 - slots].path.endswith("plateau_state")


@pytest.mark.parametrize("built", [False, True])
@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: optimizers.SGD(schedules.CosineDecay(0.1, 10), momentum=0.9, nesterov=True),
    lambda: optimizers.instrument(keras.optimizers.Adam(0.01)),
], ids=["keras", "ours", "instrumented_adam"])
def test_pickle_and_deepcopy_round_trip(make, built):
    optimizer = make()
    if built:
        variable = keras.Variable(np.ones(3, "float32"))
        optimizer.apply([keras.ops.ones((3,))], [variable])
    for copied in (pickle.loads(pickle.dumps(optimizer)), copy.deepcopy(optimizer)):
        # As Keras's own: the copy is unbuilt, with the same configuration.
        assert type(copied) is type(optimizer)
        assert copied.get_config() == optimizer.get_config()
        assert not copied.built
        if hasattr(optimizer, "plateau_state"):  # ours keep their step count too
            assert int(copied.iterations) == int(optimizer.iterations)


@pytest.mark.skipif(not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras < 3.15")
def test_reducer_scales_each_optimizer_of_a_multi_optimizer_as_keras_does():
    scores = [1.0, 1.0, 1.0, 1.0]
    rates = []
    for reducer, make in ((keras.callbacks.ReduceLROnPlateau, keras.optimizers.SGD),
                          (ReduceLROnPlateau, optimizers.SGD)):
        model, x, y = model_and_data()
        first, second = model.layers
        by_layer = {first.name: make(0.1), second.name: make(0.02)}
        multi = keras.optimizers.MultiOptimizer(lambda v: by_layer[v.path.split("/")[-2]])
        model.compile(optimizer=multi, loss="mse")
        model.fit(x, y, batch_size=16, epochs=len(scores), verbose=0,
                  callbacks=[Inject(scores), reducer("score", 0.5, patience=1, mode="min")])
        rates.append([float(keras.ops.convert_to_numpy(o.learning_rate))
                      for o in multi.optimizers])
    assert rates[1] == pytest.approx(rates[0], rel=1e-6)
    assert rates[0] == pytest.approx([0.1 / 8, 0.02 / 8], rel=1e-6)


def test_momentum_schedule_outside_its_interval_is_rejected():
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0.0, 1.0\).*span \[0.9, 1.5\]"):
        optimizers.SGD(0.01, momentum=schedules.Linear(0.9, 1.5, 8))
    with pytest.raises(ValueError, match="`momentum`"):
        optimizers.SGD(0.01, momentum=schedules.Sequential([0.5, schedules.Linear(0.5, 1.0, 4)], [3]))
    optimizers.SGD(0.01, momentum=schedules.Linear(0.5, 0.95, 8))  # inside: accepted


def test_schedules_take_name_and_a_variable_rate_as_keras_schedules_do():
    theirs = keras.optimizers.schedules.CosineDecay(keras.Variable(0.1), 10, name="cos")
    ours = schedules.CosineDecay(keras.Variable(0.1), 10, name="cos")
    assert ours.get_config()["name"] == theirs.get_config()["name"] == "cos"
    assert type(ours).from_config(ours.get_config()).get_config() == ours.get_config()
    for step in (0, 4, 10):
        assert float(ours(step)) == pytest.approx(float(theirs(step)), rel=1e-6)
    ours.initial_learning_rate.assign(0.2)  # the variable stays live
    assert float(ours(0)) == pytest.approx(0.2)


def test_verbose_reducer_messages_follow_kerass_logging_switch(caplog):
    keras.config.disable_interactive_logging()
    try:
        with caplog.at_level("INFO"):
            train(optimizers.SGD(0.1), [Inject([1.0, 1.0, 1.0]),
                                        ReduceLROnPlateau("score", 0.5, patience=1, mode="min",
                                                          verbose=1)], 3)
    finally:
        keras.config.enable_interactive_logging()
    assert "ReduceLROnPlateau reducing" in caplog.text
