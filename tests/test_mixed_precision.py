"""Mixed precision and non-finite gradients: slots stay float32, a bad step changes nothing.

Backend-agnostic (TensorFlow, graph and XLA, and JAX). References are independent of the
skipping code: a run whose bad batch is skipped must equal a run on the same data without
that batch, and an update skipped under a `LossScaleOptimizer` must leave every variable
and the schedule's step exactly as before.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_momentum import optimizers, schedules

BATCH = 8


def warmup():
    return schedules.Warmup(schedules.CosineDecay(0.05, 40), warmup_steps=3)


OPTIMIZERS = {
    "sgd": lambda **kw: optimizers.SGD(warmup(), momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
    "sgd_generic": lambda **kw: optimizers.SGD(
        warmup(), momentum=schedules.Linear(0.5, 0.9, 4), fused=False, **kw
    ),
    "qhm": lambda **kw: optimizers.QHM(warmup(), momentum=0.9, nu=0.7, **kw),
    "agg_mo": lambda **kw: optimizers.AggMo(warmup(), **kw),
    "lars": lambda **kw: optimizers.LARS(warmup(), weight_decay=1e-3, **kw),
    "schedule_free": lambda **kw: optimizers.ScheduleFreeSGD(0.05, warmup_steps=3, **kw),
    "lookahead": lambda **kw: optimizers.Lookahead(optimizers.SGD(warmup(), momentum=0.9, **kw), 2),
}


def data(batches, bad_batch=None, bad_value=np.nan):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(batches * BATCH, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2))).astype("float32")
    if bad_batch is not None:
        x[bad_batch * BATCH + 3, 1] = bad_value
    return x, y


def model_with(optimizer, **compile_kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]
    )
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def numpy_values(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


def slots(optimizer):
    """The per-variable state of the optimizers of `OPTIMIZERS`, wrappers included."""
    found = list(getattr(optimizer, "slow_weights", []))  # Lookahead
    inner = innermost(optimizer)
    found += list(inner.z) if hasattr(inner, "z") else inner._velocity_variables()
    return found


def innermost(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_slots_stay_float32_under_mixed_precision(policy, name):
    keras.mixed_precision.set_global_policy(policy)
    model = model_with(OPTIMIZERS[name]())
    x, y = data(3)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert model.layers[0].compute_dtype == policy.removeprefix("mixed_")
    for variable in model.trainable_variables:
        assert variable.dtype == "float32", variable.path
    optimizer = model.optimizer
    if policy == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    floats = [v for v in optimizer.variables if "float" in str(v.dtype)]
    assert floats and all(v.dtype == "float32" for v in floats), [
        (v.path, v.dtype) for v in floats
    ]
    assert slots(optimizer) and all(v.dtype == "float32" for v in slots(optimizer))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_a_non_finite_step_changes_nothing(policy, bad_value):
    """mixed_float16: the LossScaleOptimizer skips; mixed_bfloat16: `skip_nonfinite=True`."""
    keras.mixed_precision.set_global_policy(policy)
    skip = policy == "mixed_bfloat16"
    model = model_with(optimizers.SGD(warmup(), momentum=0.9, skip_nonfinite=skip))
    inner = innermost(model.optimizer)
    x, y = data(3, bad_batch=1, bad_value=bad_value)
    batch = [slice(i * BATCH, (i + 1) * BATCH) for i in range(3)]

    model.train_on_batch(x[batch[0]], y[batch[0]])
    before = numpy_values(model.trainable_variables + inner.velocities)
    rate_before = float(ops.convert_to_numpy(inner.learning_rate))
    assert int(ops.convert_to_numpy(inner.iterations)) == 1
    assert rate_before == pytest.approx(0.05 / 3)  # warmup step 1 of 3

    model.train_on_batch(x[batch[1]], y[batch[1]])  # the loss may stay finite (tanh(inf) = 1)
    after = numpy_values(model.trainable_variables + inner.velocities)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)
    assert int(ops.convert_to_numpy(inner.iterations)) == 1
    assert float(ops.convert_to_numpy(inner.learning_rate)) == rate_before
    if skip:
        assert int(ops.convert_to_numpy(inner.nonfinite_steps)) == 1
    else:
        assert float(ops.convert_to_numpy(model.optimizer.dynamic_scale)) == 2.0**14  # halved

    model.train_on_batch(x[batch[2]], y[batch[2]])
    assert int(ops.convert_to_numpy(inner.iterations)) == 2
    assert float(ops.convert_to_numpy(inner.learning_rate)) == pytest.approx(2 * 0.05 / 3)


# Under PyTorch, jit_compile=True is torch.compile: minutes per case on 2 CPU cores.
FIT_CASES = [(name, False) for name in OPTIMIZERS] + [
    pytest.param(name, True, marks=pytest.mark.not_torch) for name in ("sgd", "sgd_generic")]


@pytest.mark.parametrize(("name", "jit"), FIT_CASES)
def test_skip_nonfinite_in_fit_equals_training_without_the_bad_batch(name, jit):
    batches, bad = 5, 2
    x, y = data(batches, bad_batch=bad)
    keep = np.r_[0 : bad * BATCH, (bad + 1) * BATCH : batches * BATCH]

    skipping = model_with(OPTIMIZERS[name](skip_nonfinite=True), jit_compile=jit)
    skipping.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    reference = model_with(OPTIMIZERS[name](), jit_compile=jit)
    reference.fit(x[keep], y[keep], batch_size=BATCH, epochs=2, shuffle=False, verbose=0)

    for got, want in zip(skipping.get_weights(), reference.get_weights()):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for got, want in zip(numpy_values(slots(skipping.optimizer)), numpy_values(slots(reference.optimizer))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    inner = innermost(skipping.optimizer)
    assert int(ops.convert_to_numpy(skipping.optimizer.iterations)) == 2 * (batches - 1)
    assert int(ops.convert_to_numpy(inner.nonfinite_steps)) == 2
    assert inner.recorder is None  # nothing recorded without a logger
