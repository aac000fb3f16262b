"""The learning-rate range test: divergence on a quadratic with a known curvature, the rates
the steps really used, the suggestion rules, and a model and optimizer left bit for bit.

Least squares `f(w) = mean((Xw − y)²)` has Hessian `H = 2XᵀX/n`; X is built with the
eigenvalues of H spread over [0.1, 1], so the largest is L = 1 and full-batch SGD diverges
for rates above 2/L.
"""

import math

import keras
import numpy as np
import pytest

import keras_momentum
from keras_momentum import find_learning_rate, optimizers, schedules
from keras_momentum.lr_finder_result import RangeTestResult

N, D, L = 64, 8, 1.0


def least_squares():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(N, D)))
    v, _ = np.linalg.qr(rng.normal(size=(D, D)))
    eigenvalues = np.linspace(0.1, L, D)
    x = (u * np.sqrt(eigenvalues * N / 2)) @ v.T
    assert math.isclose(np.linalg.eigvalsh(2 * x.T @ x / N).max(), L, rel_tol=1e-9)
    y = x @ rng.normal(size=(D, 1))
    return x.astype("float32"), y.astype("float32")


def linear_model(optimizer):
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer, "mse")
    return model


def reduce_plateau_factor(optimizer):
    """As the plateau reducer does: the factor that multiplies the rate becomes 0.5."""
    optimizer = keras_momentum.lr_finder.innermost(optimizer)
    state = getattr(optimizer, "plateau_state", None)
    if state is None:
        return  # a Keras optimizer without this package's plateau state
    value = np.array(keras.ops.convert_to_numpy(state))
    value[0] = 0.5
    state.assign(value)


def test_stops_on_divergence_and_suggests_a_stable_rate():
    x, y = least_squares()
    model = linear_model(optimizers.SGD(0.0))
    # A train function traced before the sweep (at rate 0: w stays 0) must not serve it
    # (JAX shares traces between jits of one function); nor does the plateau factor scale it.
    model.fit(x, y, batch_size=N, epochs=1, verbose=0)
    reduce_plateau_factor(model.optimizer)
    result = find_learning_rate(model, x, y, batch_size=N, min_learning_rate=0.1,
                                max_learning_rate=100.0, steps=100, verbose=0)
    n = len(result.losses)
    assert 2 / L < result.learning_rates[-1] < 10 * 2 / L and n < 100
    assert "more than 4 x the best" in result.stop_reason or "is nan" in result.stop_reason
    assert 0.1 <= result.suggestion < 2 / L
    assert all(0 < rate < 2 / L for rate in result.suggestions.values())
    np.testing.assert_allclose(result.learning_rates, 0.1 * 1000.0 ** (np.arange(n) / 99), rtol=1e-6)

    # Smoothing and stop rule as documented, on the recorded losses.
    average, smoothed = 0.0, []
    for k, loss in enumerate(result.losses):
        average = 0.98 * average + 0.02 * loss
        smoothed.append(average / (1 - 0.98 ** (k + 1)))
    np.testing.assert_allclose(result.smoothed_losses, smoothed, rtol=1e-12)
    for k in range(1, n - 1):
        assert smoothed[k] <= 4 * min(smoothed[:k]), f"should have stopped at update {k}"
    assert not smoothed[-1] <= 4 * min(smoothed[:-1])

    # Until the divergence, the losses are those of full-batch SGD at exactly these rates
    # (NumPy, float64): the steps ran on the sweep's rates.
    w, expected = np.zeros((D, 1)), []
    for rate in result.learning_rates:
        residual = x.astype(float) @ w - y
        expected.append(float(np.mean(residual ** 2)))
        w = w - rate * 2 * x.T.astype(float) @ residual / N
    stable = result.learning_rates < 1.5 / L
    np.testing.assert_allclose(result.losses[stable], np.array(expected)[stable], rtol=1e-3, atol=1e-6)


def test_linear_mode_a_dataset_that_runs_out_and_steps_per_execution(capsys):
    import tensorflow as tf

    x, y = least_squares()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 batches, 10 updates
    model = linear_model(keras.optimizers.SGD(0.01))
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
    result = find_learning_rate(model, dataset, min_learning_rate=1e-3, max_learning_rate=0.1,
                                steps=10, mode="linear", verbose=1)
    assert result.stop_reason == "completed" and model.steps_per_execution == 3
    printed = capsys.readouterr().out
    assert "10/10" in printed and "Range test stopped at learning rate 0.1: completed." in printed
    np.testing.assert_allclose(result.learning_rates, np.linspace(1e-3, 0.1, 10), rtol=1e-6)
    assert np.all(np.isfinite(result.losses))


def small_model(optimizer):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
        keras.layers.BatchNormalization(), keras.layers.Dropout(0.2), keras.layers.Dense(1),
    ])
    model.compile(optimizer, "mse")
    return model


def classification_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 4)).astype("float32")
    return x, (x[:, :1] * x[:, 1:2] + 0.1 * rng.normal(size=(96, 1))).astype("float32")


OPTIMIZERS = {
    "sgd_float": lambda: optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-4),
    "sgd_schedule": lambda: optimizers.SGD(
        schedules.Warmup(keras.optimizers.schedules.CosineDecay(0.05, 100), 5), momentum=0.9),
    "qhm": lambda: optimizers.QHM(0.05, momentum=0.999, nu=0.7),
    "agg_mo": lambda: optimizers.AggMo(0.05, betas=(0.0, 0.9, 0.99)),
    "lars": lambda: optimizers.LARS(0.5, momentum=0.9, weight_decay=1e-4),
    "lookahead": lambda: optimizers.Lookahead(optimizers.SGD(0.05, momentum=0.9), sync_period=3),
    "loss_scale": lambda: keras.optimizers.LossScaleOptimizer(optimizers.SGD(0.05, momentum=0.9)),
    "schedule_free": lambda: optimizers.ScheduleFreeSGD(0.05, momentum=0.9),
    "instrumented_adam": lambda: optimizers.instrument(keras.optimizers.Adam(1e-3)),
    "keras_adam_schedule": lambda: keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)),
}


# The range test is specified for TensorFlow and JAX; on PyTorch the state is restored bit for
# bit, but training on afterwards drifts from the twin (open).
@pytest.mark.not_torch
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_leaves_no_trace(name):
    """After a few updates and a plateau reduction, the test changes nothing: the same
    variables bit for bit, the same rate object and train function, and training on
    afterwards equals training a twin that never ran it."""
    x, y = classification_data()
    models = [small_model(OPTIMIZERS[name]()) for _ in range(2)]
    for model in models:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        reduce_plateau_factor(model.optimizer)
    model, twin = models
    before = [keras.ops.convert_to_numpy(v) for v in model.variables + model.optimizer.variables]
    rate = keras_momentum.lr_finder.innermost(model.optimizer)._learning_rate
    train_function, history = model.train_function, model.history

    result = find_learning_rate(model, x, y, batch_size=16, steps=12, verbose=0)
    assert len(result.losses) >= 2

    after = [keras.ops.convert_to_numpy(v) for v in model.variables + model.optimizer.variables]
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    assert keras_momentum.lr_finder.innermost(model.optimizer)._learning_rate is rate
    assert model.train_function is train_function and model.history is history
    assert not model.stop_training and "train_step" not in vars(model)
    for each in (model, twin):
        keras.utils.set_random_seed(5)
        each.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_deterministic_under_a_fixed_seed():
    x, y = classification_data()
    results = []
    for _ in range(2):
        model = small_model(optimizers.SGD(0.05, momentum=0.9))
        keras.utils.set_random_seed(11)
        results.append(find_learning_rate(model, x, y, batch_size=16, steps=15, verbose=0))
    np.testing.assert_array_equal(results[0].losses, results[1].losses)
    assert results[0].suggestions == results[1].suggestions


def test_suggestion_rules_on_a_known_curve():
    rates = np.logspace(-4, 0, 81)
    t = np.log10(rates)
    # A smooth drop centred at 1e-2 (steepest there), a minimum at 10^-1.0, then a rise.
    curve = 1.0 - 0.5 * np.tanh(3.0 * (t + 2.0)) + np.where(t > -1.0, 10 * (t + 1.0) ** 2, 0.0)
    result = RangeTestResult(rates, curve, curve, "completed")
    assert result.suggestion == pytest.approx(1e-2, rel=0.13)  # neighbouring grid points
    assert result.suggestions["minimum"] == pytest.approx(rates[np.argmin(curve)] / 10)
    # Of the 81 points the rules see 8 .. 76; the longest decreasing run there is 8 .. argmin.
    assert result.suggestions["valley"] == pytest.approx(rates[(8 + np.argmin(curve)) // 2])
    assert "suggestion" in repr(result)
    diverged_at_once = RangeTestResult(np.array([0.1, 1.0]), np.array([1.0, np.inf]),
                                       np.array([1.0, np.inf]), "the loss at update 1 is inf")
    assert all(math.isnan(rate) for rate in diverged_at_once.suggestions.values())


def test_plot_marks_the_suggestion():
    import matplotlib

    matplotlib.use("Agg")
    rates = np.logspace(-4, 0, 41)
    curve = 1.0 - 0.5 * np.tanh(3.0 * (np.log10(rates) + 2.0))
    figure = RangeTestResult(rates, curve + 0.01, curve, "completed").plot()
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert any(line.get_xdata()[0] == pytest.approx(1e-2, rel=0.3) for line in ax.lines[2:])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"steps": 1}, ValueError, r"`steps` must be an int >= 2, got 1"),
        ({"min_learning_rate": 0.0}, ValueError, r"`min_learning_rate` must be a float > 0, got 0.0"),
        ({"max_learning_rate": 1e-8}, ValueError, r"`max_learning_rate` must be a float > min_learning_rate"),
        ({"mode": "cosine"}, ValueError, r"`mode` must be one of 'exponential', 'linear'; got 'cosine'"),
        ({"smoothing": 1.0}, ValueError, r"`smoothing` must be a float in \[0, 1\), got 1.0"),
        ({"divergence_threshold": 1.0}, ValueError, r"`divergence_threshold` must be a float > 1"),
        ({"steps": True}, ValueError, r"`steps` must be an int >= 2, got True"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    x, y = least_squares()
    with pytest.raises(error, match=message):
        find_learning_rate(linear_model(optimizers.SGD(0.01)), x, y, **kwargs)


def test_uncompiled_or_accumulating_models_are_refused():
    x, y = least_squares()
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="must be compiled"):
        find_learning_rate(model, x, y)
    model = linear_model(optimizers.SGD(0.01, gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        find_learning_rate(model, x, y)
