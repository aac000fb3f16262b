"""keras_momentum.callbacks.ReduceLROnPlateau: plateau-factor reduction under schedules and wrappers.

The monitored quantity is injected by a callback that runs first, so each test decides exactly
which epochs improve. Where both apply, decisions are checked against Keras's own
`keras.callbacks.ReduceLROnPlateau` (an independent implementation of the same rules).
"""

import keras
import numpy as np
import pytest
from _scores import Inject

from keras_momentum import optimizers
from keras_momentum.callbacks import ReduceLROnPlateau
from keras_momentum.schedules import CosineDecay

STEPS_PER_EPOCH = 2  # 64 samples, batch 32


def fit(optimizer, scores, callback):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    history = model.fit(
        x, x[:, :1], batch_size=32, epochs=len(scores), verbose=0,
        callbacks=[Inject(scores), callback],
    )
    return model, history.history


PLATEAU = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5]


def test_schedule_keeps_advancing_under_a_reduced_plateau_factor():
    schedule = CosineDecay(0.1, 100)
    optimizer = optimizers.SGD(learning_rate=schedule, momentum=0.9)
    callback = ReduceLROnPlateau("score", factor=0.5, patience=2, mode="min")
    model, history = fit(optimizer, PLATEAU, callback)
    # Reductions at the ends of epochs 3 and 5 (0-based); logs hold the value during the epoch.
    assert history["plateau_factor"] == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    for epoch, (rate, multiplier) in enumerate(
        zip(history["learning_rate"], history["plateau_factor"])
    ):
        step = (epoch + 1) * STEPS_PER_EPOCH
        expected = float(schedule(step)) * multiplier
        assert rate == pytest.approx(expected, rel=1e-6)
    assert int(model.optimizer.iterations) == len(PLATEAU) * STEPS_PER_EPOCH
    assert float(model.optimizer.plateau_factor) == pytest.approx(0.25)


def keras_reference(scores, **kwargs):
    callback = keras.callbacks.ReduceLROnPlateau("score", mode="min", **kwargs)
    return fit(keras.optimizers.SGD(0.1), scores, callback)[1]["learning_rate"]


@pytest.mark.parametrize(
    "kwargs, scores",
    [
        ({"factor": 0.5, "patience": 2}, PLATEAU),
        ({"factor": 0.5, "patience": 1, "cooldown": 2}, [1.0] * 9),
        ({"factor": 0.2, "patience": 1, "min_delta": 0.05}, [1.0, 0.97, 0.9, 0.88, 0.8, 0.79, 0.7]),
        ({"factor": 0.1, "patience": 1, "min_lr": 0.002}, [1.0] * 6),
    ],
    ids=["patience", "cooldown", "min_delta", "min_lr"],
)
def test_float_learning_rate_decisions_match_keras(kwargs, scores):
    expected = keras_reference(scores, **kwargs)
    ours = fit(optimizers.SGD(0.1), scores, ReduceLROnPlateau("score", mode="min", **kwargs))[1]
    assert ours["learning_rate"] == pytest.approx(expected, rel=1e-6)
    keras_sgd = fit(keras.optimizers.SGD(0.1), scores, ReduceLROnPlateau("score", mode="min", **kwargs))
    assert keras_sgd[1]["learning_rate"] == pytest.approx(expected, rel=1e-6)
    assert "plateau_factor" not in keras_sgd[1] and "plateau_factor" not in ours


def test_cooldown_spaces_reductions():
    callback = ReduceLROnPlateau("score", factor=0.5, patience=1, cooldown=2, mode="min")
    _, history = fit(optimizers.SGD(0.1), [1.0] * 9, callback)
    # Keras's rule: the cooldown counter is decremented before the epoch is judged, so with
    # cooldown=2 one epoch is skipped; reductions happen at epoch ends 1, 3, 5 and 7.
    assert history["learning_rate"] == pytest.approx(
        0.1 * np.array([1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625]), rel=1e-6
    )


def test_min_lr_clips_the_multiplier_against_the_current_schedule_value():
    schedule = CosineDecay(0.1, 40)
    callback = ReduceLROnPlateau("score", factor=0.1, patience=1, min_lr=0.02, mode="min")
    model, history = fit(optimizers.SGD(schedule, momentum=0.9), [1.0, 1.0, 1.0], callback)
    base_at_reduction = float(schedule(2 * STEPS_PER_EPOCH))
    multiplier = float(model.optimizer.plateau_factor)
    assert multiplier == pytest.approx(0.02 / base_at_reduction, rel=1e-6)
    # At the third epoch end the effective rate is below min_lr (the schedule decayed): no change.
    assert history["learning_rate"][2] < 0.02
    assert history["plateau_factor"][2] == pytest.approx(multiplier)


@pytest.mark.parametrize("inner_kind", ["package_schedule", "keras_float", "instrumented_schedule"])
def test_loss_scale_optimizer_is_unwrapped(inner_kind):
    schedule = CosineDecay(0.1, 100)
    inner = {
        "package_schedule": lambda: optimizers.SGD(schedule, momentum=0.9),
        "keras_float": lambda: keras.optimizers.SGD(0.1),
        "instrumented_schedule": lambda: optimizers.instrument(keras.optimizers.SGD(schedule)),
    }[inner_kind]()
    optimizer = keras.optimizers.LossScaleOptimizer(inner)
    callback = ReduceLROnPlateau("score", factor=0.5, patience=1, mode="min")
    model, history = fit(optimizer, [1.0, 1.0, 1.0], callback)
    innermost = model.optimizer.inner_optimizer
    if inner_kind == "keras_float":
        assert float(innermost.learning_rate) == pytest.approx(0.025)
    else:
        assert float(innermost.plateau_factor) == pytest.approx(0.25)
        assert float(innermost.learning_rate) == pytest.approx(
            0.25 * float(schedule(3 * STEPS_PER_EPOCH)), rel=1e-6
        )


def test_plain_keras_optimizer_with_a_schedule_is_refused():
    optimizer = keras.optimizers.SGD(CosineDecay(0.1, 100))
    with pytest.raises(TypeError, match=r"keras_momentum\.optimizers\.instrument"):
        fit(optimizer, [1.0, 1.0], ReduceLROnPlateau("score", mode="min"))


def test_plateau_state_survives_save_and_load(tmp_path):
    callback = ReduceLROnPlateau("score", factor=0.5, patience=1, mode="min")
    model, _ = fit(optimizers.SGD(CosineDecay(0.1, 100), momentum=0.9), [1.0, 1.0, 1.0], callback)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert float(loaded.optimizer.plateau_factor) == pytest.approx(0.25)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        float(model.optimizer.learning_rate), rel=1e-6
    )


def test_missing_monitor_warns_and_auto_mode_needs_a_known_direction():
    with pytest.warns(UserWarning, match="`val_loss`, which is not in the logs"):
        fit(optimizers.SGD(0.1), [1.0, 1.0], ReduceLROnPlateau())
    with pytest.raises(ValueError, match=r"`monitor`='score'.*mode='min' or mode='max'"):
        fit(optimizers.SGD(0.1), [1.0, 1.0], ReduceLROnPlateau("score"))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"factor": 1.0}, ValueError, r"`factor` must be in \(0, 1\), got 1.0"),
        ({"factor": 0.0}, ValueError, r"`factor` must be in \(0, 1\), got 0.0"),
        ({"factor": float("nan")}, ValueError, r"`factor` must be a finite number, got nan"),
        ({"patience": -1}, ValueError, r"`patience` must be an integer >= 0, got -1"),
        ({"cooldown": 1.5}, ValueError, r"`cooldown` must be an integer >= 0, got 1.5"),
        ({"mode": "up"}, ValueError, r"`mode` must be one of 'auto', 'min', 'max'; got 'up'"),
        ({"min_lr": -1e-3}, ValueError, r"`min_lr` must be >= 0, got -0.001"),
        ({"monitor": 3}, TypeError, r"`monitor` must be a str, got 3"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ReduceLROnPlateau(**kwargs)
