"""SharpnessAwareMinimization: torch reference trajectories, ρ = 0, batch normalisation,
saving, loss scaling, loggers and `tf.distribute`.

The reference (`fixtures/sam_torch.json`, made by `fixtures/make_sam_fixtures.py`) is a float64
PyTorch re-implementation of the issue's equations with `torch.optim.SGD` inside; the Keras runs
are float32, hence the 1e-5 relative tolerance.
"""

import json
import pathlib

import keras
import numpy as np
import pytest
from _processes import run

from keras_momentum.callbacks import GradientNormLogger, ReduceLROnPlateau
from keras_momentum.models import SharpnessAwareMinimization
from keras_momentum.optimizers import SGD
from keras_momentum.schedules import CosineDecay

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "sam_torch.json").read_text())
BATCH = 16


def relative_error(actual, expected):
    return np.linalg.norm(np.asarray(actual) - expected) / np.linalg.norm(expected)


def fixture_data():
    x = np.asarray(FIXTURE["x"], "float32")
    y = np.asarray(FIXTURE["y"], "float32")
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])


def fixture_mlp():
    model = keras.Sequential([
        keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3),
    ])
    model.set_weights([np.asarray(w, "float32") for w in FIXTURE["initial"]])
    return model


def torch_sgd():
    return SGD(FIXTURE["learning_rate"], momentum=FIXTURE["momentum"], nesterov=True,
               formulation="pytorch")


def keras_sgd():
    return keras.optimizers.SGD(FIXTURE["learning_rate"], momentum=FIXTURE["momentum"],
                                nesterov=True)


def fit_fixture(model, optimizer):
    model.compile(optimizer=optimizer, loss="mse")
    x, y = fixture_data()
    history = model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
    return history.history["loss"][0]


@pytest.mark.parametrize("optimizer", [torch_sgd, keras_sgd], ids=["package_sgd", "keras_sgd"])
@pytest.mark.parametrize("index", [0, 1], ids=["sam", "asam"])
def test_matches_torch_reference(index, optimizer):
    reference = FIXTURE["runs"][index]
    sam = SharpnessAwareMinimization(
        fixture_mlp(), rho=reference["case"]["rho"], adaptive=reference["case"]["adaptive"],
        eps=FIXTURE["eps"],
    )
    loss = fit_fixture(sam, optimizer())
    for actual, expected in zip(sam.get_weights(), reference["final"]):
        assert relative_error(actual, expected) < 1e-5
    # fit reports the mean of the first passes' losses.
    assert loss == pytest.approx(np.mean(reference["first_pass_losses"]), rel=1e-5)


def test_reference_is_far_from_plain_momentum_and_between_variants():
    # The tolerance above separates SAM from ASAM and from momentum SGD alone.
    plain = fixture_mlp()
    fit_fixture(plain, torch_sgd())
    sam, asam = (run["final"] for run in FIXTURE["runs"])
    for p, s, a in zip(plain.get_weights(), sam, asam):
        assert relative_error(p, s) > 1e-3
        assert relative_error(s, a) > 1e-3


def regularised_net(dropout=True):
    """Dense + batch normalisation (+ dropout) + L2, with fixed initial weights and seeds.

    Keras does not save random seed states, so runs that save and reload leave dropout out.
    """
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-2)),
        keras.layers.BatchNormalization(momentum=0.8),
        keras.layers.Activation("relu"),
        *([keras.layers.Dropout(0.3, seed=5)] if dropout else []),
        keras.layers.Dense(2),
    ])


def regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, np.stack([x[:, 0] * x[:, 1], np.sin(x[:, 2])], axis=1).astype("float32")


def test_rho_zero_trains_as_the_plain_model():
    x, y = regression_data()
    results = []
    for wrap in (False, True):
        net = regularised_net()
        model = SharpnessAwareMinimization(net, rho=0.0) if wrap else net
        model.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse", metrics=["mae"])
        history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        results.append((net.get_weights(), history.history))
    (plain_weights, plain_history), (sam_weights, sam_history) = results
    for plain, sam in zip(plain_weights, sam_weights):
        np.testing.assert_allclose(sam, plain, rtol=1e-6, atol=1e-7)
    for key in ("loss", "mae"):
        np.testing.assert_allclose(sam_history[key], plain_history[key], rtol=1e-6)


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_batch_normalization_statistics_move_once_per_step(adaptive):
    # The first layer's input is the batch itself, so a second update per step would show as
    # (1 - m)(1 + m) instead of (1 - m) times the batch mean. The second batch normalisation
    # follows a dense layer: after one step its statistics are those of the unperturbed weights.
    momentum, steps = 0.8, 3
    net = keras.Sequential([
        keras.Input((6,)), keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.Dense(4), keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.Dense(2),
    ])
    kernel, bias = net.layers[1].get_weights()
    sam = SharpnessAwareMinimization(net, rho=0.5, adaptive=adaptive)
    sam.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse")
    x, y = regression_data(BATCH)
    hidden = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3) @ kernel + bias
    sam.train_on_batch(x, y)
    # (Its moving mean would not tell: the mean of `hidden` is the bias, whose gradient the
    # normalisation cancels.)
    np.testing.assert_allclose(net.layers[2].moving_variance.numpy(),
                               momentum + (1 - momentum) * hidden.var(0), rtol=1e-5)
    for _ in range(steps - 1):
        sam.train_on_batch(x, y)
    first = net.layers[0]
    kept = 1 - momentum**steps
    np.testing.assert_allclose(first.moving_mean.numpy(), kept * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        first.moving_variance.numpy(), momentum**steps + kept * x.var(0), rtol=1e-5
    )


def test_save_load_continue_equals_continuing(tmp_path):
    x, y = regression_data()
    sam = SharpnessAwareMinimization(regularised_net(dropout=False), rho=0.5, adaptive=True,
                                     eps=1e-10)
    sam.compile(optimizer=SGD(0.05, momentum=0.9, nesterov=True), loss="mse")
    sam.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = tmp_path / "sam.keras"
    sam.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SharpnessAwareMinimization)
    assert (loaded.rho, loaded.adaptive, loaded.eps) == (0.5, True, 1e-10)
    assert isinstance(loaded.model, keras.Sequential)
    for model in (sam, loaded):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for continued, resumed in zip(sam.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(resumed, continued, rtol=1e-6, atol=1e-7)
    for continued, resumed in zip(sam.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(np.asarray(resumed), np.asarray(continued), rtol=1e-6)


def test_inner_model_is_the_trained_model_and_saves_alone(tmp_path):
    x, y = regression_data()
    net = regularised_net()
    sam = SharpnessAwareMinimization(net)
    assert sam.model is net
    sam.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse")
    sam.fit(x, y, batch_size=BATCH, verbose=0)
    net.save(tmp_path / "inner.keras")
    restored = keras.models.load_model(tmp_path / "inner.keras")
    np.testing.assert_allclose(restored.predict(x, verbose=0), sam.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def small_sam(optimizer, eps=1e-12):
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(2)])
    sam = SharpnessAwareMinimization(net, rho=0.1, eps=eps)
    sam.compile(optimizer=optimizer, loss="mse")
    return sam


def fit_small(optimizer, eps=1e-12, epochs=1):
    x, y = regression_data()
    sam = small_sam(optimizer, eps)
    history = sam.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return sam, history.history["loss"]


def test_loss_scaling_is_undone_before_the_perturbation():
    # With eps comparable to the gradient norm, a perturbation computed from the scaled
    # gradient (2**15 times larger) would be visibly different.
    plain, _ = fit_small(SGD(0.05, momentum=0.9), eps=0.1)
    for optimizer in (
        keras.optimizers.LossScaleOptimizer(SGD(0.05, momentum=0.9)),
        SGD(0.05, momentum=0.9, loss_scale_factor=128.0),
    ):
        scaled, _ = fit_small(optimizer, eps=0.1)
        for a, b in zip(scaled.get_weights(), plain.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_an_overflowing_loss_scale_skips_the_step():
    # A loss of about 1e8 scaled by 2**120 overflows float32: the first gradient is infinite,
    # so is the second, and the step must leave the weights as they were (not NaN).
    optimizer = keras.optimizers.LossScaleOptimizer(SGD(0.05), initial_scale=2.0**120)
    x, y = regression_data(BATCH)
    sam = small_sam(optimizer)
    before = sam.get_weights()
    sam.train_on_batch(x, y * 1e4)
    for a, b in zip(sam.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert float(np.asarray(optimizer.dynamic_scale.value)) == 2.0**119


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_close_to_float32(policy):
    _, reference = fit_small(SGD(0.05, momentum=0.9), epochs=2)
    keras.mixed_precision.set_global_policy(policy)
    try:
        sam, losses = fit_small(SGD(0.05, momentum=0.9), epochs=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if policy == "mixed_float16":
        assert isinstance(sam.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(losses))
    np.testing.assert_allclose(losses, reference, rtol=0.05)


def test_loggers_schedules_and_plateau_reducer_run_with_the_wrapper(tmp_path):
    x, y = regression_data()
    sam = SharpnessAwareMinimization(regularised_net())
    sam.compile(optimizer=SGD(CosineDecay(0.05, 100), momentum=0.9), loss="mse")
    callbacks = [GradientNormLogger(str(tmp_path / "logs")),
                 ReduceLROnPlateau(monitor="loss", patience=0)]
    history = sam.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=callbacks)
    assert np.all(np.isfinite(history.history["loss"]))


def test_backup_and_restore_resumes_where_the_run_stopped(tmp_path):
    x, y = regression_data()

    def fit(epochs, callbacks=()):
        sam = SharpnessAwareMinimization(regularised_net(dropout=False), rho=0.2)
        sam.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse")
        sam.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                callbacks=list(callbacks))
        return sam

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(3, [backup, StopAfterFirstEpoch()])
    resumed = fit(3, [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    straight = fit(3)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


class TwoDense(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, activation="tanh")
        self.out = keras.layers.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


def test_unbuilt_subclassed_and_multi_output_models_train():
    x, y = regression_data()
    sam = SharpnessAwareMinimization(TwoDense())
    sam.compile(optimizer=SGD(0.05, momentum=0.9), loss="mse")
    assert np.isfinite(sam.fit(x, y, batch_size=BATCH, verbose=0).history["loss"][0])

    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4)(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(hidden),
               "b": keras.layers.Dense(1, name="b")(hidden)}
    sam = SharpnessAwareMinimization(keras.Model(inputs, outputs))
    sam.compile(optimizer=SGD(0.05), loss={"a": "mse", "b": "mae"}, metrics={"a": ["mae"]})
    history = sam.fit(x, {"a": y, "b": y[:, :1]}, batch_size=BATCH, verbose=0).history
    assert {"loss", "a_loss", "b_loss", "a_mae"} <= set(history)
    # Each per-output loss is reported once per step, from the first pass.
    assert history["loss"][0] == pytest.approx(history["a_loss"][0] + history["b_loss"][0],
                                               rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"rho": -0.1}, "rho"), ({"rho": float("nan")}, "rho"), ({"rho": True}, "rho"),
     ({"adaptive": 1}, "adaptive"), ({"eps": 0.0}, "eps"), ({"eps": "1e-12"}, "eps"),
     ({"model": "mlp"}, "model")],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    arguments = {"model": keras.Sequential([keras.layers.Dense(1)]), **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        SharpnessAwareMinimization(**arguments)


@pytest.mark.tensorflow
def test_mirrored_strategy_matches_one_device(tmp_path):
    # The perturbation uses the gradient summed over replicas, so two replicas with half a
    # batch each follow one device on the whole batch.
    path = tmp_path / "sam_mirrored.npz"
    run("sam_mirrored_run.py", path, timeout=300)
    with np.load(path) as arrays:
        for variant in ("sam", "asam"):
            one = [arrays[k] for k in sorted(arrays.files) if k.startswith(f"{variant}/one/")]
            two = [arrays[k] for k in sorted(arrays.files) if k.startswith(f"{variant}/two/")]
            assert one and len(one) == len(two)
            for a, b in zip(two, one):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
