"""StochasticWeightAveraging and update_batch_norm against torch.optim.swa_utils.

References in fixtures/swa_torch.json (fixtures/make_swa_fixtures.py): AveragedModel fed a
fixed sequence of weights, SWALR's rates, update_bn's statistics. A SIGKILL in the middle of
the averaging, resumed with BackupAndRestore, ends where an uninterrupted run ends.
"""

import json
import os
import pathlib
import signal
import warnings

import keras
import numpy as np
import pytest
from _processes import kill_all, start, wait_all, wait_for_file

import keras_momentum
from keras_momentum import callbacks, optimizers, schedules
from keras_momentum.callbacks import StochasticWeightAveraging

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "swa_torch.json").read_text())
AVERAGING = FIXTURE["averaging"]
BATCH = 8


def network():
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(6), keras.layers.BatchNormalization(epsilon=1e-5),
        keras.layers.ReLU(),
        keras.layers.Dense(2), keras.layers.BatchNormalization(epsilon=1e-5),
    ])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model


def keras_weights(state):
    """torch's state dict (names of fixtures/make_swa_fixtures.py) in Keras's weight order."""
    out = []
    for linear, norm in (("0", "1"), ("3", "4")):
        out += [np.asarray(state[f"{linear}.weight"]).T, np.asarray(state[f"{linear}.bias"])]
        out += [np.asarray(state[f"{norm}.{k}"]) for k in ("weight", "bias", "running_mean", "running_var")]
    return [w.astype("float32") for w in out]


class SetWeights(keras.callbacks.Callback):
    """Ends epoch `e` with the fixture's weights `sequence[order[e]]` (the rate is 0)."""

    def __init__(self, order=range(len(AVERAGING["sequence"]))):
        super().__init__()
        self.order = list(order)

    def on_epoch_end(self, epoch, logs=None):
        self.model.set_weights(keras_weights(AVERAGING["sequence"][self.order[epoch]]))


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2 * BATCH, 4)).astype("float32"), rng.normal(size=(2 * BATCH, 2)).astype("float32")


def test_average_equals_averaged_model_and_warns_about_batch_norm():
    model = network()
    swa = StochasticWeightAveraging(start_epoch=AVERAGING["start_epoch"])
    with pytest.warns(UserWarning, match=r"keras_momentum.update_batch_norm\(model, data\)"):
        model.fit(*data(), batch_size=BATCH, epochs=len(AVERAGING["sequence"]), verbose=0,
                  callbacks=[swa, SetWeights()])
    assert swa.averaged_epochs == len(AVERAGING["averages"])
    for got, want in zip(model.get_weights(), keras_weights(AVERAGING["averages"][-1])):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not hasattr(model, "_stochastic_weight_averaging")  # no trace left on the model

    # The same callback in a new `fit` from epoch 0 starts a new average: epochs 2..5 now
    # end with sequence[3], ..., sequence[0].
    with pytest.warns(UserWarning, match="update_batch_norm"):
        model.fit(*data(), batch_size=BATCH, epochs=len(AVERAGING["sequence"]), verbose=0,
                  callbacks=[swa, SetWeights(order=[5, 4, 3, 2, 1, 0])])
    assert swa.averaged_epochs == 4
    sets = [keras_weights(AVERAGING["sequence"][i]) for i in range(4)]
    for got, *each in zip(model.get_weights(), *sets):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)


def test_batch_norm_data_recomputes_statistics_as_update_bn():
    model = network()
    batches = [np.asarray(b, "float32") for b in AVERAGING["batches"]]
    swa = StochasticWeightAveraging(start_epoch=AVERAGING["start_epoch"],
                                    batch_norm_data=[(b, None) for b in batches])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(*data(), batch_size=BATCH, epochs=len(AVERAGING["sequence"]), verbose=0,
                  callbacks=[SetWeights(), swa])
    check_statistics(model)
    averaged = keras_weights(AVERAGING["averages"][-1])
    for i in (0, 1, 2, 3, 6, 7, 8, 9):  # everything but the moving statistics
        np.testing.assert_allclose(model.get_weights()[i], averaged[i], rtol=1e-6, atol=1e-7)


def check_statistics(model):
    """Moving statistics equal update_bn's: the same means; torch averages unbiased batch
    variances, Keras the biased ones, `(m − 1)/m` of them for batches of m samples."""
    weights = model.get_weights()
    for norm, (mean, variance) in (("1", (4, 5)), ("4", (10, 11))):
        want_mean = np.asarray(AVERAGING["update_bn"][f"{norm}.running_mean"])
        want_variance = np.asarray(AVERAGING["update_bn"][f"{norm}.running_var"]) * (BATCH - 1) / BATCH
        np.testing.assert_allclose(weights[mean], want_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[variance], want_variance, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["iterable", "arrays", "dataset"])
def test_update_batch_norm_equals_update_bn(form):
    model = network()
    model.set_weights(keras_weights(AVERAGING["averages"][-1]))
    before = model.get_weights()
    batches = [np.asarray(b, "float32") for b in AVERAGING["batches"]]
    momenta = [layer.momentum for layer in model.layers if hasattr(layer, "momentum")]
    if form == "iterable":
        count = keras_momentum.update_batch_norm(model, [(b, np.zeros(BATCH)) for b in batches])
    elif form == "arrays":
        count = keras_momentum.update_batch_norm(model, np.concatenate(batches), batch_size=BATCH)
    else:
        import tensorflow as tf  # a tf.data pipeline feeds every backend

        dataset = tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(BATCH)
        count = keras_momentum.update_batch_norm(model, dataset)
    assert count == len(batches)
    check_statistics(model)
    for i in (0, 1, 2, 3, 6, 7, 8, 9):
        np.testing.assert_array_equal(model.get_weights()[i], before[i])
    assert [layer.momentum for layer in model.layers if hasattr(layer, "momentum")] == momenta


class Rates(keras.callbacks.Callback):
    """The effective rate of each epoch, read at its first batch."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def regression(learning_rate):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    model.compile(optimizers.SGD(learning_rate, momentum=0.5), "mse")
    return model


@pytest.mark.parametrize("case", FIXTURE["swalr"], ids=lambda c: f"anneal{c['anneal_epochs']}")
def test_rates_equal_swalr(case):
    start = 2
    model, rates = regression(case["initial"]), Rates()
    swa = StochasticWeightAveraging(start, case["swa_learning_rate"], case["anneal_epochs"])
    model.fit(*data(), batch_size=BATCH, epochs=start + len(case["rates"]), verbose=0,
              shuffle=False, callbacks=[swa, rates])
    want = [case["initial"]] * start + case["rates"]
    np.testing.assert_allclose(rates.rates, want, rtol=1e-6)


def test_schedule_is_blended_and_given_back():
    """A (constant) schedule anneals like a float rate: same rates, same trained weights, so
    the train step really ran on the blended rate (JAX included); the schedule is back after."""
    case = FIXTURE["swalr"][3]
    schedule = keras.optimizers.schedules.ExponentialDecay(case["initial"], 1000, 1.0)
    results = []
    for learning_rate in (case["initial"], schedule):
        model, rates = regression(learning_rate), Rates()
        swa = StochasticWeightAveraging(1, case["swa_learning_rate"], case["anneal_epochs"])
        model.fit(*data(), batch_size=BATCH, epochs=1 + 6, verbose=0, shuffle=False,
                  callbacks=[swa, rates])
        results.append((rates.rates, model.get_weights()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    np.testing.assert_allclose(results[1][0][1:], case["rates"][:6], rtol=1e-6)
    for got, want in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert model.optimizer._learning_rate is schedule


def test_schedule_free_evaluation_beside_swa():
    """With ScheduleFreeSGD the evaluation weights x are averaged; the model ends holding
    their average in evaluation mode, whatever the order of the two callbacks."""
    for order in (0, 1):
        keras.utils.set_random_seed(2)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        optimizer = optimizers.ScheduleFreeSGD(0.1, momentum=0.9)
        model.compile(optimizer, "mse")
        seen = []

        class Evaluation(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                with optimizer.evaluation_weights():
                    seen.append(model.get_weights())

        pair = [StochasticWeightAveraging(1), callbacks.ScheduleFreeEvaluation()]
        model.fit(*data(), batch_size=BATCH, epochs=4, verbose=0, shuffle=False,
                  callbacks=[Evaluation(), *(pair if order == 0 else pair[::-1])])
        assert optimizer.in_evaluation_mode
        for got, *epochs in zip(model.get_weights(), *seen[1:]):
            np.testing.assert_allclose(got, np.mean(epochs, axis=0), rtol=1e-5, atol=1e-6)


def test_learning_rate_logger_records_the_blended_schedule(tmp_path):
    """The diagnostics keep recording through the retraces: every update, at the rate used."""
    model = regression(schedules.Warmup(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.9), 4))
    logger = callbacks.LearningRateLogger(str(tmp_path), update_freq=1)
    model.fit(*data(), batch_size=BATCH, epochs=4, verbose=0,
              callbacks=[StochasticWeightAveraging(1, 0.01, anneal_epochs=2), logger])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415
    from tensorboard.util import tensor_util  # noqa: PLC0415

    accumulator = EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    events = accumulator.Tensors("learning_rate")
    np.testing.assert_array_equal([e.step for e in events], np.arange(1, 9))
    rates = np.array([float(tensor_util.make_ndarray(e.tensor_proto)) for e in events])
    # Epoch 1 (updates 3, 4) blends half way; from epoch 2 on (updates 5..8) the rate is 0.01.
    base = [0.1 * t / 4 if t < 4 else 0.1 * 0.9 ** ((t - 4) / 100) for t in range(8)]
    np.testing.assert_allclose(rates[:2], base[:2], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(rates[2:4], [0.5 * 0.01 + 0.5 * b for b in base[2:4]], rtol=1e-5)
    np.testing.assert_allclose(rates[4:], 0.01, rtol=1e-6)


def test_nothing_averaged_warns_and_keeps_weights():
    model = regression(0.1)
    with pytest.warns(UserWarning, match="no epoch from `start_epoch` on ended"):
        model.fit(*data(), batch_size=BATCH, epochs=2, verbose=0,
                  callbacks=[StochasticWeightAveraging(start_epoch=5)])


def test_config_and_bad_arguments():
    swa = StochasticWeightAveraging(3, 0.05, anneal_epochs=2, batch_norm_data=[1])
    assert swa.get_config() == {"start_epoch": 3, "swa_learning_rate": 0.05, "anneal_epochs": 2}
    with pytest.raises(ValueError, match=r"`start_epoch` must be an int >= 0, got -1"):
        StochasticWeightAveraging(-1)
    with pytest.raises(ValueError, match=r"`anneal_epochs` must be an int >= 0, got 1.5"):
        StochasticWeightAveraging(0, 0.1, anneal_epochs=1.5)
    with pytest.raises(ValueError, match=r"`swa_learning_rate` must be None or a float >= 0"):
        StochasticWeightAveraging(0, -0.1)
    with pytest.raises(TypeError, match=r"`swa_learning_rate` must be None or a float >= 0"):
        StochasticWeightAveraging(0, "0.1")


def test_average_is_saved_with_the_weights(tmp_path):
    """During training the average travels with `save_weights`, and a model without the
    callback loads such a file (the extra entry is ignored)."""
    path = str(tmp_path / "mid.weights.h5")

    class Save(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                self.model.save_weights(path)

    model = regression(0.1)
    swa = StochasticWeightAveraging(0)
    model.fit(*data(), batch_size=BATCH, epochs=4, verbose=0, callbacks=[swa, Save()])
    fresh, plain = regression(0.1), regression(0.1)
    for each in (fresh, plain):
        each.optimizer.build(each.trainable_variables)
    twin = StochasticWeightAveraging(0)
    twin.set_model(fresh)
    fresh.load_weights(path)
    assert twin.averaged_epochs == 3
    plain.load_weights(path)


def test_killed_and_resumed_run_continues_the_average_exactly(tmp_path):
    work = tmp_path
    processes = []
    try:
        killed = start("swa_resume_run.py", "killed", work, log=work / "killed.log")
        reference = start("swa_resume_run.py", "reference", work, log=work / "reference.log")
        processes += [killed, reference]
        wait_for_file(work / "ready.json", killed, timeout=150, log=work / "killed.log")
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        resumed = start("swa_resume_run.py", "resumed", work, log=work / "resumed.log")
        processes.append(resumed)
        wait_all([reference, resumed], timeout=180, logs=[work / "reference.log", work / "resumed.log"])
    finally:
        kill_all(processes)
    marker = json.loads((work / "ready.json").read_text())
    with np.load(work / "resumed.npz") as resumed, np.load(work / "reference.npz") as reference:
        # Killed with epochs 1 and 2 averaged; the last backup (end of epoch 2) holds epoch 1
        # and epoch 2's weights, which the resumed run adds when epoch 3 begins.
        assert marker["averaged_at_kill"] == 2
        assert int(resumed["restored_count"]) == 1
        assert sorted(resumed.files) == sorted(reference.files)
        for key in reference.files:
            if key != "restored_count":
                np.testing.assert_allclose(resumed[key], reference[key], rtol=0, atol=1e-6, err_msg=key)
