"""`velocity_dtype`: storage maps against NumPy emulations, trajectories, checkpoints, errors."""

import keras
import numpy as np
import pytest

from keras_momentum.optimizers import diagnostics
from keras import ops

from _family import Table, float32

from keras_momentum.optimizers import LARS, QHM, SGD, AggMo, ScheduleFreeSGD
from keras_momentum.optimizers import _velocity_storage as storage

DTYPES = ("float32", "bfloat16", "int8")


# --- NumPy emulations of the two storages --------------------------------------------------
def bfloat16_numpy(x):
    """float32 -> bfloat16 -> float32, round to nearest even, on the bits."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def int8_numpy(x):
    """float32 -> (codes, scales) -> float32: absmax per block of 256, ties to even."""
    x = np.asarray(x, np.float32)
    flat = np.zeros(-(-x.size // 256) * 256, np.float32)
    flat[: x.size] = x.ravel()
    blocks = flat.reshape(-1, 256)
    scales = np.abs(blocks).max(axis=1) * np.float32(1 / 127)
    divisor = np.where(scales > 0, scales, np.float32(1))
    codes = np.clip(np.rint(blocks / divisor[:, None]), -127, 127).astype(np.int8)
    values = (codes.astype(np.float32) * scales[:, None]).ravel()[: x.size]
    return values.reshape(x.shape), codes.ravel()[: x.size].reshape(x.shape), scales


def stored_numpy(x, velocity_dtype):
    if velocity_dtype == "bfloat16":
        return bfloat16_numpy(x)
    if velocity_dtype == "int8":
        return int8_numpy(x)[0]
    return np.asarray(x, np.float32)


def test_bfloat16_emulation_rounds_to_nearest_even():
    import ml_dtypes

    x = np.random.default_rng(0).normal(size=10000).astype(np.float32)
    x[:3] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)]  # ties: to even, i.e. down, up, down
    expected = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(bfloat16_numpy(x), expected)
    np.testing.assert_array_equal(expected[:3], [1.0, 1 + 2**-6, -1.0])


@pytest.mark.parametrize("shape", [(7,), (256,), (300, 3), (2, 3, 50)])
def test_int8_storage_matches_numpy(shape):
    rng = np.random.default_rng(len(shape))
    x = (rng.normal(size=shape) * 10.0 ** rng.integers(-4, 2, size=shape)).astype(np.float32)
    if x.size > 256:
        x.ravel()[:256] = 0.0  # an all-zero block
    values, codes, scales = int8_numpy(x)
    got_codes, got_scales = storage.quantize(ops.convert_to_tensor(x))
    np.testing.assert_array_equal(ops.convert_to_numpy(got_codes), codes)
    np.testing.assert_array_equal(ops.convert_to_numpy(got_scales), scales)
    got = storage.dequantize(got_codes, got_scales)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), values)
    # Every value within half a step of its block's scale.
    step = np.repeat(scales, 256)[: x.size].reshape(shape)
    assert np.all(np.abs(values - x) <= step / 2 * (1 + 1e-6))


# --- One update from zero velocity: the stored values are the emulated storage of it ----
def first_velocities(name, g, lr=0.1):
    """What each optimizer's velocities hold after one update from zero, in float32."""
    lr = np.float32(lr)
    return {
        "sgd_keras": [-(g * lr)],
        "sgd_pytorch": [g],
        "qhm": [np.float32(1 - np.float32(0.9)) * g],
        "agg_mo": [-g, -g],
    }[name]


OPTIMIZERS = {
    "sgd_keras": lambda **kw: SGD(0.1, momentum=0.9, **kw),
    "sgd_pytorch": lambda **kw: SGD(0.1, momentum=0.9, formulation="pytorch", **kw),
    "qhm": lambda **kw: QHM(0.1, momentum=0.9, **kw),
    "agg_mo": lambda **kw: AggMo(0.1, betas=(0.0, 0.9), **kw),
}


@pytest.mark.parametrize("velocity_dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_first_update_stores_the_emulated_values(name, velocity_dtype):
    g = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32) * 1e-2
    optimizer = OPTIMIZERS[name](velocity_dtype=velocity_dtype)
    variable = keras.Variable(np.ones((300, 3), np.float32))
    optimizer.apply([ops.convert_to_tensor(g)], [variable])
    values = optimizer._velocity_values()
    expected = first_velocities(name, g)
    assert len(values) == len(expected)
    for got, want in zip(values, expected):
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_array_equal(ops.convert_to_numpy(got), stored_numpy(want, velocity_dtype))


@pytest.mark.parametrize("velocity_dtype", DTYPES)
def test_slots_have_the_storage_dtype_and_size(velocity_dtype):
    optimizer = AggMo(0.1, betas=(0.0, 0.9), velocity_dtype=velocity_dtype)
    variables = [keras.Variable(np.zeros((300, 3), np.float32), name="kernel"),
                 keras.Variable(np.zeros((3,), np.float32), name="bias")]
    optimizer.build(variables)
    assert [str(v.dtype) for v, _ in optimizer._velocity_slots()] == [velocity_dtype] * 4
    scales = [s for _, s in optimizer._velocity_slots()]
    if velocity_dtype == "int8":
        assert [tuple(s.shape) for s in scales] == [(4,), (1,), (4,), (1,)]  # per beta
        assert "velocity_0_scale" in scales[0].path
    else:
        assert scales == [None] * 4


# --- Trajectories against a NumPy emulation of float32 arithmetic with rounded storage ----
STEPS = 20


def sgd_emulation(theta, grads_fn, formulation, nesterov, velocity_dtype, lrs, mus):
    velocity = [np.zeros_like(p) for p in theta]
    for t in range(STEPS):
        lr, mu = np.float32(lrs[t]), np.float32(mus[t])
        for i, g in enumerate(grads_fn(theta)):
            g = g.astype(np.float32)
            v = velocity[i]
            if formulation == "keras":
                step = g * lr
                new = v * mu - step
                change = new * mu - step if nesterov else new
            else:
                new = v * mu + g
                change = -((g + new * mu) * lr if nesterov else new * lr)
            velocity[i] = stored_numpy(new, velocity_dtype)
            theta[i] = theta[i] + change
    return theta


def quadratic32(seed):
    rng = np.random.default_rng(seed)
    shapes = [(20, 16), (16,)]
    problems = []
    for shape in shapes:
        n = int(np.prod(shape))
        q = rng.normal(size=(n, n)).astype(np.float32)
        problems.append((q @ q.T / n + np.float32(0.2) * np.eye(n, dtype=np.float32),
                         rng.normal(size=n).astype(np.float32)))
    theta0 = [rng.normal(size=s).astype(np.float32) for s in shapes]

    def gradient(theta):
        return [(a @ p.reshape(-1) - b).reshape(p.shape) for p, (a, b) in zip(theta, problems)]

    return theta0, gradient


@pytest.mark.parametrize("velocity_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("formulation,nesterov", [("keras", False), ("keras", True),
                                                  ("pytorch", False), ("pytorch", True)])
def test_sgd_follows_the_emulation_with_schedules(formulation, nesterov, velocity_dtype):
    theta0, gradient = quadratic32(seed=4)
    lrs = [float32(0.02 * 0.97**t) for t in range(STEPS)]
    mus = [float32(0.5 + 0.4 * t / STEPS) for t in range(STEPS)]
    optimizer = SGD(Table(lrs), momentum=Table(mus), nesterov=nesterov,
                    formulation=formulation, velocity_dtype=velocity_dtype)
    variables = [keras.Variable(x) for x in theta0]
    for _ in range(STEPS):
        grads = gradient([ops.convert_to_numpy(v) for v in variables])
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
    expected = sgd_emulation([x.copy() for x in theta0], gradient, formulation, nesterov,
                             velocity_dtype, lrs, mus)
    for v, want in zip(variables, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(v), want, rtol=1e-5, atol=1e-6)
    # The storage matters at this tolerance: float32 slots end elsewhere.
    plain = sgd_emulation([x.copy() for x in theta0], gradient, formulation, nesterov,
                          "float32", lrs, mus)
    assert max(np.abs(p - e).max() for p, e in zip(plain, expected)) > 1e-5


def test_float32_storage_equals_the_default_for_float32_weights():
    theta0, gradient = quadratic32(seed=6)
    results = []
    for velocity_dtype in (None, "float32"):
        optimizer = SGD(0.01, momentum=0.9, velocity_dtype=velocity_dtype)
        variables = [keras.Variable(x) for x in theta0]
        for _ in range(5):
            grads = gradient([ops.convert_to_numpy(v) for v in variables])
            optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
        results.append([ops.convert_to_numpy(v) for v in variables])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# --- Checkpoints, fit, skipped steps -------------------------------------------------------
def small_model(optimizer):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(300, activation="tanh"),
                              keras.layers.Dense(2)])
    model.compile(optimizer, loss="mse")
    return model


def batches():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    return x, (x @ rng.normal(size=(6, 2))).astype(np.float32)


@pytest.mark.parametrize("velocity_dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda vd: SGD(0.05, momentum=0.9, velocity_dtype=vd, cautious=True),
    lambda vd: LARS(0.5, velocity_dtype=vd),
])
def test_keras_file_restores_stored_velocities_exactly(tmp_path, make, velocity_dtype):
    x, y = batches()
    original = small_model(make(velocity_dtype))
    original.fit(x, y, batch_size=8, epochs=1, verbose=0)
    original.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.optimizer.get_config() == original.optimizer.get_config()
    for got, want in zip(restored.optimizer.variables, original.optimizer.variables):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
    for model in (original, restored):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(restored.get_weights(), original.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_skipped_steps_leave_int8_velocities_alone():
    optimizer = SGD(0.1, momentum=0.9, velocity_dtype="int8", skip_nonfinite=True)
    variable = keras.Variable(np.ones((300,), np.float32))
    optimizer.apply([ops.convert_to_tensor(np.full((300,), 0.5, np.float32))], [variable])
    before = [ops.convert_to_numpy(v) for v in optimizer.variables if "velocity" in v.path]
    bad = np.full((300,), 0.5, np.float32)
    bad[7] = np.nan
    optimizer.apply([ops.convert_to_tensor(bad)], [variable])
    after = [ops.convert_to_numpy(v) for v in optimizer.variables if "velocity" in v.path]
    assert len(before) == 2
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert int(ops.convert_to_numpy(optimizer.nonfinite_steps)) == 1


# --- Configuration and errors --------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: SGD(0.1, momentum=0.9, velocity_dtype="int8", cautious=True),
    lambda: QHM(0.1, velocity_dtype="bfloat16", cautious=True),
    lambda: AggMo(0.1, velocity_dtype="float32", cautious=True),
    lambda: LARS(0.1, velocity_dtype="int8", cautious=True),
])
def test_config_round_trip(make):
    optimizer = make()
    config = optimizer.get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.get_config() == config
    assert config["velocity_dtype"] in DTYPES and config["cautious"] is True


@pytest.mark.parametrize("value", ["float16", "fp8", 8, "Int8"])
def test_unknown_velocity_dtype_is_rejected(value):
    with pytest.raises(ValueError, match=r"`velocity_dtype` must be one of None, 'float32', "
                                         r"'bfloat16', 'int8', got"):
        SGD(0.1, momentum=0.9, velocity_dtype=value)


def test_optimizers_without_velocities_reject_velocity_dtype():
    with pytest.raises(ValueError, match=r"`velocity_dtype` is not an argument of ScheduleFreeSGD"):
        ScheduleFreeSGD(0.1, velocity_dtype="int8")
    assert "velocity_dtype" not in ScheduleFreeSGD(0.1).get_config()


@pytest.mark.parametrize("velocity_dtype", DTYPES)
def test_diagnostics_never_read_int8_codes_as_velocities(velocity_dtype):
    optimizer = SGD(0.1, momentum=0.9, velocity_dtype=velocity_dtype)
    diagnostics.attach(optimizer).request("test", ["velocity_norm"], 1)
    variable = keras.Variable(np.ones((300,), np.float32))
    for _ in range(2):
        optimizer.apply([ops.convert_to_tensor(np.full((300,), 0.5, np.float32))], [variable])
    columns = optimizer.recorder.read()[1]
    norm = np.linalg.norm(ops.convert_to_numpy(optimizer._velocity_values()[0]))
    if velocity_dtype == "int8" and "velocity_norm/global" not in columns:
        return  # left out rather than the codes' norm
    np.testing.assert_allclose(columns["velocity_norm/global"][-1], norm, rtol=1e-6)
