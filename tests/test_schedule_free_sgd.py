"""ScheduleFreeSGD against the x, y, z sequences of Defazio et al. (2024), pytorch_optimizer
fixtures, and the evaluation swap (methods, context manager, callback) in Keras workflows."""

import keras
import numpy as np
import pytest
from keras import ops

from _family import (
    STEPS, Table, assert_trajectories_close, fit_losses, fixture_case, float32, quadratic,
    regression_data, relative_error, run, run_fixture, small_model, variables_for,
)
from keras_momentum.callbacks import ScheduleFreeEvaluation
from keras_momentum.optimizers import ScheduleFreeSGD


def reference(theta0, gradient, learning_rates, beta, warmup, r, power, decay):
    """The three sequences of the paper, kept explicitly (no in-place rewriting)."""
    x = [t.copy() for t in theta0]
    z = [t.copy() for t in theta0]
    y = [t.copy() for t in theta0]
    largest, total = 0.0, 0.0
    trajectory = []
    for t in range(STEPS):
        gamma = learning_rates[t] * (min(1.0, (t + 1) / warmup) if warmup else 1.0)
        largest = max(largest, gamma)
        weight = (t + 1) ** r * largest**power
        total += weight
        c = weight / total if total else 0.0
        grads = gradient(y)
        for i, g in enumerate(grads):
            z[i] = z[i] - gamma * (g + decay * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
            y[i] = (1 - beta) * z[i] + beta * x[i]
        trajectory.append([v.copy() for v in y])
    return trajectory, x


CASES = [
    dict(learning_rate=0.1, momentum=0.9, warmup_steps=0, r=0.0, weight_lr_power=2.0),
    dict(learning_rate=0.2, momentum=0.8, warmup_steps=10, r=1.0, weight_lr_power=1.0,
         weight_decay=0.05),
    dict(learning_rate="table", momentum=0.95, warmup_steps=5, r=0.5, weight_lr_power=2.0),
]


@pytest.mark.parametrize("kwargs", CASES, ids=["plain", "warmup_r_decay", "scheduled"])
def test_matches_paper_sequences(kwargs):
    theta0, gradient = quadratic(seed=40 + kwargs["warmup_steps"])
    if kwargs["learning_rate"] == "table":
        # Down then up: the weights use the largest rate so far.
        learning_rates = [float32(0.15 if t < 30 else 0.05 if t < 60 else 0.2)
                          for t in range(STEPS)]
        kwargs = {**kwargs, "learning_rate": Table(learning_rates)}
    else:
        learning_rates = [float32(kwargs["learning_rate"])] * STEPS
    optimizer = ScheduleFreeSGD(**kwargs)
    variables = variables_for(theta0)
    ours = run(optimizer, variables, lambda w, _: gradient(w))
    expected, x = reference(
        theta0, gradient, learning_rates, float32(kwargs["momentum"]), kwargs["warmup_steps"],
        kwargs["r"], kwargs["weight_lr_power"], float32(kwargs.get("weight_decay", 0.0)),
    )
    assert_trajectories_close(ours, expected)
    with optimizer.evaluation_weights():
        assert relative_error([ops.convert_to_numpy(v) for v in variables], x) <= 1e-5
    assert relative_error([ops.convert_to_numpy(v) for v in variables], expected[-1]) <= 1e-6


def test_weights_set_after_build_start_all_sequences():
    theta0, gradient = quadratic(seed=7)
    variables = variables_for([np.zeros_like(t) for t in theta0])
    optimizer = ScheduleFreeSGD(0.1)
    optimizer.build(variables)
    for variable, value in zip(variables, theta0):
        variable.assign(value.astype("float32"))
    ours = run(optimizer, variables, lambda w, _: gradient(w))
    expected, _ = reference(theta0, gradient, [float32(0.1)] * STEPS, float32(0.9), 0, 0.0, 2.0,
                            0.0)
    assert_trajectories_close(ours, expected)


# pytorch_optimizer.ScheduleFreeSGD(lr, momentum, warmup_steps, r, weight_lr_power,
# weight_decay) maps to ours with the same values; its eval() gives our evaluation weights.
@pytest.mark.parametrize("name", ["schedule_free_sgd", "schedule_free_sgd_weighted"])
def test_matches_pytorch_optimizer(name):
    case = fixture_case(name)
    kwargs = case["kwargs"]
    optimizer = ScheduleFreeSGD(
        kwargs["lr"], momentum=kwargs["momentum"], warmup_steps=kwargs.get("warmup_steps", 0),
        r=kwargs.get("r", 0.0), weight_lr_power=kwargs.get("weight_lr_power", 2.0),
        weight_decay=kwargs.get("weight_decay"),
    )
    ours, expected, variables = run_fixture(optimizer, case)
    assert_trajectories_close(ours, expected)
    optimizer.swap_to_evaluation()
    evaluation = [np.array(w) for w in case["evaluation"]]
    assert relative_error([ops.convert_to_numpy(v) for v in variables], evaluation) <= 1e-5


def test_swaps_are_idempotent_inverse_and_no_ops_before_training():
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = ScheduleFreeSGD(0.1, momentum=0.5)
    assert not optimizer.in_evaluation_mode
    optimizer.build([variable])
    assert optimizer.swap_to_evaluation()  # before any update x = y: values unchanged
    np.testing.assert_array_equal(ops.convert_to_numpy(variable), 1.0)
    assert optimizer.swap_to_training()
    for _ in range(2):
        optimizer.apply([ops.ones((3,))], [variable])
    # c1 = c2 = ½ with constant rate: z = 1 − 0.2 = 0.8, x = ½·0.9 + ½·0.8 = 0.85,
    # y = ½·0.8 + ½·0.85 = 0.825.
    np.testing.assert_allclose(ops.convert_to_numpy(variable), 0.825, rtol=1e-6)
    assert optimizer.swap_to_evaluation() and not optimizer.swap_to_evaluation()
    assert optimizer.in_evaluation_mode
    np.testing.assert_allclose(ops.convert_to_numpy(variable), 0.85, rtol=1e-6)
    assert optimizer.swap_to_training() and not optimizer.swap_to_training()
    np.testing.assert_allclose(ops.convert_to_numpy(variable), 0.825, rtol=1e-6)


def test_callback_validates_on_x_and_leaves_x_after_fit():
    x, y = regression_data()
    runs = {}
    for with_callback in (False, True):
        model = small_model()
        model.compile(ScheduleFreeSGD(0.05, warmup_steps=8), "mse")
        callbacks = [ScheduleFreeEvaluation()] if with_callback else []
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
                            validation_data=(x, y), callbacks=callbacks).history
        runs[with_callback] = (model, history)
    plain, swapped = runs[False][0], runs[True][0]
    assert swapped.optimizer.in_evaluation_mode and not plain.optimizer.in_evaluation_mode
    # Validation ran on x: the last val_loss is the loss of the weights left after fit.
    last = runs[True][1]["val_loss"][-1]
    np.testing.assert_allclose(swapped.evaluate(x, y, verbose=0), last, rtol=1e-5)
    assert abs(runs[False][1]["val_loss"][-1] - last) > 1e-4
    # Training itself is unchanged by the swaps.
    assert runs[True][1]["loss"] == pytest.approx(runs[False][1]["loss"], rel=1e-5)
    swapped.optimizer.swap_to_training()
    for a, b in zip(swapped.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_save_load_continue_equals_uninterrupted(tmp_path):
    x, y = regression_data()
    kwargs = dict(learning_rate=0.05, momentum=0.9, warmup_steps=4, weight_decay=1e-3)

    def fit(model, epochs):
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False,
                  callbacks=[ScheduleFreeEvaluation()])

    reference_model = small_model()
    reference_model.compile(ScheduleFreeSGD(**kwargs), "mse")
    fit(reference_model, 4)
    interrupted = small_model()
    interrupted.compile(ScheduleFreeSGD(**kwargs), "mse")
    fit(interrupted, 2)
    interrupted.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(restored.optimizer, ScheduleFreeSGD)
    assert restored.optimizer.in_evaluation_mode
    fit(restored, 2)
    for a, b in zip(restored.get_weights(), reference_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow
def test_graph_and_xla_agree():
    weights = []
    for jit in (False, True):
        x, y = regression_data()
        model = small_model()
        model.compile(ScheduleFreeSGD(0.05, warmup_steps=6, r=1.0, weight_decay=1e-3), "mse",
                      jit_compile=jit)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        weights.append(model.get_weights() + [ops.convert_to_numpy(model.optimizer.weight_sum)])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_callback_rejects_other_optimizers():
    model = small_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = regression_data(16)
    with pytest.raises(TypeError, match="schedule-free"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ScheduleFreeEvaluation()])


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"momentum": 0.0}, "momentum"),
        ({"momentum": 1.0}, "momentum"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 2.5}, "warmup_steps"),
        ({"r": -1.0}, "r"),
        ({"weight_lr_power": -2.0}, "weight_lr_power"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay_mode": "decoupled"}, "weight_decay_mode"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        ScheduleFreeSGD(**kwargs)


def test_config_round_trip():
    for optimizer in (
        ScheduleFreeSGD(0.5, momentum=0.95, warmup_steps=100, r=1.0, weight_lr_power=1.0,
                        weight_decay=1e-4, clipnorm=1.0, name="sf"),
        ScheduleFreeSGD(Table([0.1, 0.2]), weight_decay=Table([1e-3]), skip_nonfinite=True),
    ):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is ScheduleFreeSGD
        assert restored.get_config() == optimizer.get_config()


def test_fit_reduces_loss():
    losses, _ = fit_losses(ScheduleFreeSGD(0.05, warmup_steps=5))
    assert losses[-1] < 0.2 * losses[0]
