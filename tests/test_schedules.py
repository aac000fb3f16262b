"""Schedules: closed-form values, continuity, step dtypes, tracing, serialisation, validation.

Reference values are computed here with `math` from the formulas in the papers/docstrings,
written independently of the implementation (e.g. SGDR restarts found by summing cycle
lengths in a loop rather than by the logarithm the schedule uses).
"""

import inspect
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_momentum import schedules as S


def value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def examples():
    """One instance of every schedule class, with non-default arguments."""
    cosine = S.CosineDecay(0.1, 30, min_learning_rate=0.01)
    return {
        "StepDecay": S.StepDecay(0.1, 7, gamma=0.5),
        "MultiStepDecay": S.MultiStepDecay(0.2, [5, 12, 30], gamma=0.3),
        "ExponentialDecay": S.ExponentialDecay(0.1, 10, 0.5, staircase=True, min_learning_rate=0.02),
        "CosineDecay": cosine,
        "CosineRestarts": S.CosineRestarts(0.1, 5, t_mul=1.5, m_mul=0.7, min_learning_rate=0.001),
        "Linear": S.Linear(0.9, 0.1, 20),
        "Warmup": S.Warmup(cosine, 8, initial_learning_rate=0.001, shape="cosine"),
        "WarmupOfKeras": S.Warmup(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9), 4),
        "Sequential": S.Sequential([S.Linear(0.01, 0.1, 5), 0.1, cosine], [5, 9]),
        "OneCycle": S.OneCycle(0.5, 60, pct_start=0.25, anneal="linear", three_phase=True),
        "OneCycleMomentum": S.OneCycle(0.5, 60).momentum_schedule(0.8, 0.97),
        "Cyclical": S.Cyclical(0.01, 0.1, 6, mode="exp_range", gamma=0.99),
        "WarmupStableDecay": S.WarmupStableDecay(0.3, 5, 10, 20, 0.01, decay_shape="cosine"),
        "InverseSqrt": S.InverseSqrt(0.02, 16),
        "DemonMomentum": S.DemonMomentum(0.95, 50),
    }


EXAMPLES = examples()


# ------------------------------------------------------------------ closed-form values
def sgdr(t, first, t_mul, m_mul, high, low):
    start, length, cycle = 0.0, float(first), 0
    while t >= start + length:
        start, length, cycle = start + length, length * t_mul, cycle + 1
    cosine = (1 + math.cos(math.pi * (t - start) / length)) / 2
    return low + m_mul**cycle * (high - low) * cosine


def smith_clr(t, base, high, step_size, mode, gamma):
    cycle = math.floor(1 + t / (2 * step_size))
    x = abs(t / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**t}[mode]
    return base + (high - base) * max(0.0, 1 - x) * scale


CLOSED_FORM = [
    (S.StepDecay(0.1, 3, 0.5), [(0, 0.1), (2, 0.1), (3, 0.05), (10, 0.1 * 0.5**3)]),
    (S.MultiStepDecay(1.0, [2, 5], 0.1), [(1, 1.0), (2, 0.1), (4, 0.1), (5, 0.01), (99, 0.01)]),
    (S.ExponentialDecay(0.1, 10, 0.5), [(0, 0.1), (5, 0.1 * 0.5**0.5), (25, 0.1 * 0.5**2.5)]),
    (S.ExponentialDecay(0.1, 10, 0.5, staircase=True), [(9, 0.1), (15, 0.05), (20, 0.025)]),
    (S.ExponentialDecay(0.1, 1, 0.5, min_learning_rate=0.01), [(3, 0.0125), (4, 0.01), (50, 0.01)]),
    (
        S.CosineDecay(1.0, 100, 0.1),
        [(0, 1.0), (25, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2), (100, 0.1), (10**6, 0.1)],
    ),
    (S.Linear(2.0, -1.0, 6), [(0, 2.0), (3, 0.5), (6, -1.0), (1000, -1.0)]),
    (S.InverseSqrt(2.0, 4), [(0, 0.0), (2, 1.0), (4, 2.0), (16, 1.0), (64, 0.5)]),
    (S.DemonMomentum(0.9, 100), [(0, 0.9), (100, 0.0), (150, 0.0)]
     + [(t, 0.9 * (1 - t / 100) / (0.1 + 0.9 * (1 - t / 100))) for t in (1, 50, 99)]),
    (
        S.OneCycle(1.0, 100, pct_start=0.3, div_factor=25.0, final_div_factor=1e4),
        [(0, 0.04), (29, 1.0), (99, 0.04 / 1e4), (100, 0.04 / 1e4), (5000, 0.04 / 1e4)],
    ),
    (
        S.WarmupStableDecay(1.0, 10, 20, 40, 0.1, decay_shape="sqrt"),
        [(0, 0.0), (5, 0.5), (10, 1.0), (29, 1.0), (30, 1.0), (40, 0.1 + 0.9 * (1 - 0.5)),
         (70, 0.1), (500, 0.1)],
    ),
    (
        S.WarmupStableDecay(1.0, 0, 0, 10, decay_shape="cosine"),
        [(0, 1.0), (5, 0.5), (10, 0.0)],
    ),
    (S.WarmupStableDecay(2.0, 4, 2, 10), [(3, 1.5), (6, 2.0), (11, 1.0), (16, 0.0)]),
]


@pytest.mark.parametrize("schedule, expected", CLOSED_FORM, ids=lambda x: type(x).__name__)
def test_closed_form_values(schedule, expected):
    for step, want in expected:
        assert value(schedule, step) == pytest.approx(want, rel=1e-5, abs=1e-7), step


@pytest.mark.parametrize("t_mul, m_mul, first", [(1.0, 1.0, 7), (2.0, 0.5, 10), (1.5, 0.8, 4), (3.0, 1.0, 3)])
def test_cosine_restarts_matches_cycle_by_cycle_reference(t_mul, m_mul, first):
    schedule = S.CosineRestarts(1.0, first, t_mul=t_mul, m_mul=m_mul, min_learning_rate=0.05)
    for t in range(0, 200):
        assert value(schedule, t) == pytest.approx(sgdr(t, first, t_mul, m_mul, 1.0, 0.05), abs=2e-6), t


def test_cosine_restarts_restarts_exactly_where_float32_log_is_off():
    # log1p(8191) / log(2) rounds below 13 in float32, which would put the restart at step
    # 8191 one cycle too early (value at the minimum instead of the maximum).
    schedule = S.CosineRestarts(1.0, 1, t_mul=2.0)
    for t in (8190, 8191, 8192, 32767):
        assert value(schedule, t) == pytest.approx(sgdr(t, 1, 2.0, 1.0, 1.0, 0.0), abs=1e-6), t


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_matches_smith_formula(mode):
    schedule = S.Cyclical(0.1, 1.0, 5, mode=mode, gamma=0.98)
    for t in range(60):
        assert value(schedule, t) == pytest.approx(smith_clr(t, 0.1, 1.0, 5, mode, 0.98), abs=1e-6)


@pytest.mark.parametrize(
    "shape, halfway",
    [
        ("linear", 0.01 + (0.5 - 0.01) / 2),
        ("cosine", 0.01 + (0.5 - 0.01) * (1 - math.cos(math.pi / 2)) / 2),
        ("exponential", 0.01 * (0.5 / 0.01) ** 0.5),
        ("constant", 0.01),
    ],
)
def test_warmup_shapes_and_offset(shape, halfway):
    inner = S.CosineDecay(0.5, 20)
    schedule = S.Warmup(inner, 10, initial_learning_rate=0.01, shape=shape)
    assert value(schedule, 0) == pytest.approx(0.01)
    assert value(schedule, 5) == pytest.approx(halfway, rel=1e-6)
    for t in (10, 13, 30, 100):  # after warmup: the wrapped schedule, offset by warmup_steps
        assert value(schedule, t) == pytest.approx(0.5 * (1 + math.cos(math.pi * min(t - 10, 20) / 20)) / 2, abs=1e-7)


def test_warmup_of_a_float_and_sequential_parts_count_from_their_start():
    assert [value(S.Warmup(0.2, 4), t) for t in (0, 1, 4, 50)] == pytest.approx([0.0, 0.05, 0.2, 0.2])
    sequential = S.Sequential([0.3, S.StepDecay(1.0, 2, 0.5), S.Linear(0.0, 1.0, 10)], [3, 9])
    expected = [0.3, 0.3, 0.3, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.0, 0.1, 0.5, 1.0]
    got = [value(sequential, t) for t in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 40)]
    assert got == pytest.approx(expected)


def test_inverse_sqrt_is_noam_with_matched_peak():
    d_model, warmup = 512, 4000
    schedule = S.InverseSqrt(d_model**-0.5 * warmup**-0.5, warmup)
    for s in (1, 10, 1000, 3999, 4000, 4001, 10**5):
        noam = d_model**-0.5 * min(s**-0.5, s * warmup**-1.5)
        assert value(schedule, s) == pytest.approx(noam, rel=1e-5)


def test_demon_keeps_total_future_weight_linear():
    schedule = S.DemonMomentum(0.9, 40)
    for t in range(0, 41, 5):
        beta = value(schedule, t)
        assert beta / (1 - beta) == pytest.approx((1 - t / 40) * 0.9 / 0.1, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------ continuity
CONTINUITY = [
    (S.Warmup(S.CosineDecay(1.0, 50), 10, 0.1, "linear"), [10.0]),
    (S.Warmup(S.CosineDecay(1.0, 50), 10, 0.1, "cosine"), [10.0]),
    (S.Warmup(S.InverseSqrt(1.0, 5), 10, 0.1, "exponential"), [10.0]),
    (S.Sequential([S.Linear(0.1, 1.0, 10), S.CosineDecay(1.0, 20), 0.0], [10, 30]), [10.0, 30.0]),
    (S.WarmupStableDecay(1.0, 10, 20, 30, 0.1, "linear"), [10.0, 30.0, 60.0]),
    (S.WarmupStableDecay(1.0, 10, 20, 30, 0.1, "sqrt"), [10.0, 30.0, 60.0]),
    (S.OneCycle(1.0, 100, anneal="linear"), [29.0, 99.0]),
    (S.OneCycle(1.0, 100, pct_start=0.25, anneal="linear", three_phase=True), [24.0, 48.0, 99.0]),
    (S.OneCycle(1.0, 100, anneal="linear").momentum_schedule(), [29.0, 99.0]),
    (S.InverseSqrt(1.0, 10), [10.0]),
    (S.CosineDecay(1.0, 10), [10.0]),
]


@pytest.mark.parametrize("schedule, boundaries", CONTINUITY, ids=lambda x: type(x).__name__)
def test_continuous_at_boundaries(schedule, boundaries):
    for boundary in boundaries:
        before, at, after = (value(schedule, boundary + d) for d in (-1e-4, 0.0, 1e-4))
        assert abs(at - before) < 2e-3 and abs(after - at) < 2e-3, (boundary, before, at, after)


def test_constant_warmup_jumps_and_continuity_check_detects_it():
    schedule = S.Warmup(1.0, 10, 0.1, shape="constant")
    assert value(schedule, 10 - 1e-4) == pytest.approx(0.1)
    assert value(schedule, 10) == pytest.approx(1.0)


# -------------------------------------------------------------------- step handling
STEP_KINDS = [
    ("python_int", lambda t: t),
    ("numpy_int32", np.int32),
    ("numpy_int64", np.int64),
    ("int32_tensor", lambda t: keras.ops.convert_to_tensor(t, "int32")),
    ("int64_tensor", lambda t: keras.ops.convert_to_tensor(t, "int64")),
    ("python_float", float),
    ("float64_tensor", lambda t: keras.ops.convert_to_tensor(t, "float64")),
    ("int64_variable", lambda t: keras.Variable(t, dtype="int64", trainable=False)),
]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_step_dtypes_give_the_same_float32_scalar(name):
    schedule = EXAMPLES[name]
    expected = value(schedule, 13)
    for kind, make in STEP_KINDS:
        result = schedule(make(13))
        assert keras.backend.standardize_dtype(result.dtype) == "float32", kind
        assert tuple(result.shape) == (), kind
        assert float(keras.ops.convert_to_numpy(result)) == pytest.approx(expected, rel=1e-6), kind


@pytest.mark.parametrize("name", ["StepDecay", "Warmup", "OneCycle"])
def test_non_scalar_step_is_rejected(name):
    with pytest.raises(ValueError, match=r"`step` must be a scalar.*shape \(2,\)"):
        EXAMPLES[name](np.array([1, 2]))


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_traces_once_under_xla_with_a_step_variable(name):
    import tensorflow as tf

    schedule = EXAMPLES[name]
    step = tf.Variable(0, dtype=tf.int64)
    traces = []

    @tf.function(jit_compile=True)
    def compiled():
        traces.append(None)
        return schedule(step)

    for t in (0, 4, 17, 59, 1000):
        step.assign(t)
        got = compiled()
        assert got.dtype == tf.float32
        assert float(got) == pytest.approx(value(schedule, t), rel=1e-5, abs=1e-7), t
    assert len(traces) == 1


@pytest.mark.all_backends
def test_same_values_on_the_jax_backend():
    pytest.importorskip("jax")
    steps = [0, 3, 8, 13, 29, 47, 250]
    expected = {name: [value(s, t) for t in steps] for name, s in EXAMPLES.items()}
    script = (
        "import json, jax, keras, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from tests.test_schedules import examples\n"
        "out = {}\n"
        "for name, s in examples().items():\n"
        "    f = jax.jit(lambda t, s=s: s(t))\n"
        "    out[name] = [float(f(jax.numpy.asarray(t, 'int32'))) for t in json.loads(sys.argv[2])]\n"
        "print(json.dumps(out))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", script, root, json.dumps(steps)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)


# -------------------------------------------------------------------- serialisation
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_round_trip(name):
    schedule = EXAMPLES[name]
    config = schedule.get_config()
    json.dumps(config)
    init_arguments = set(inspect.signature(type(schedule).__init__).parameters) - {"self"}
    assert set(config) == init_arguments
    restored = type(schedule).from_config(config)
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(schedule)
    for t in (0, 3, 9, 21, 40, 77):
        assert value(restored, t) == value(schedule, t)
        assert value(revived, t) == value(schedule, t)


def test_schedule_inside_a_saved_keras_model(tmp_path):
    schedule = S.Warmup(S.OneCycle(0.5, 40, three_phase=True), 5, shape="cosine")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    model.fit(np.ones((8, 3)), np.ones((8, 1)), batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    revived = loaded.optimizer._learning_rate
    assert isinstance(revived, S.Warmup) and isinstance(revived.schedule, S.OneCycle)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(value(schedule, 2))


# ----------------------------------------------------------------- epochs and plot
def test_epochs_helper_gives_epoch_wise_staircase():
    assert S.epochs(30, 100) == 3000
    assert S.epochs(0.5, 7) == 4
    assert S.epochs([30, 60, 80], 10) == [300, 600, 800]
    steps_per_epoch = 7
    schedule = S.StepDecay(0.1, step_size=S.epochs(3, steps_per_epoch))
    for t in range(0, 80, 3):
        epoch = t // steps_per_epoch
        assert value(schedule, t) == pytest.approx(0.1 * 0.1 ** (epoch // 3))


def test_plot_draws_each_schedule(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cosine, step = S.CosineDecay(1.0, 10), S.StepDecay(1.0, 4)
    figure = S.plot({"cosine": cosine, "step": step}, 12)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["cosine", "step"]
    assert list(lines[1].get_ydata()) == pytest.approx([value(step, t) for t in range(12)])
    _, ax = plt.subplots()
    assert S.plot([cosine, 0.3], range(0, 20, 5), ax=ax) is ax.figure
    assert list(ax.get_lines()[0].get_xdata()) == [0, 5, 10, 15]
    assert S.plot(cosine, 3).axes[0].get_lines()[0].get_ydata()[0] == pytest.approx(1.0)
    plt.close("all")


def test_plot_labels_axes_by_hyperparameter_and_always_has_a_legend():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def labels(figure):
        ax = figure.axes[0]
        legend = ax.get_legend()
        return (ax.get_xlabel(), ax.get_ylabel(),
                legend and [text.get_text() for text in legend.get_texts()])

    one_cycle = S.OneCycle(0.1, 20)
    assert labels(S.plot(one_cycle, 20)) == ("optimizer step", "learning rate", ["OneCycle"])
    assert labels(S.plot(one_cycle.momentum_schedule(), 20)) == (
        "optimizer step", "momentum", ["OneCycleMomentum"])
    assert labels(S.plot({"linear ramp": S.Linear(0.95, 0.85, 10)}, 10,
                         hyperparameter="momentum"))[1:] == ("momentum", ["linear ramp"])
    plt.close("all")


def test_repr_shows_the_class_and_arguments_and_evaluates_back():
    assert repr(S.Linear(0.9, 0.5, 8)) == "Linear(initial_value=0.9, final_value=0.5, steps=8)"
    assert repr(S.Warmup(S.Linear(0.9, 0.5, 8), 2)) == (
        "Warmup(schedule=Linear(initial_value=0.9, final_value=0.5, steps=8), warmup_steps=2, "
        "initial_learning_rate=0.0, shape='linear')")
    for schedule in examples().values():
        text = repr(schedule)
        assert text.startswith(f"{type(schedule).__name__}(") and " object at " not in text, text
        revived = eval(text, {**vars(S), "keras": keras})  # noqa: S307  (our repr, our names)
        assert type(revived) is type(schedule)
        assert json.dumps(revived.get_config(), sort_keys=True) == json.dumps(
            schedule.get_config(), sort_keys=True)


# ------------------------------------------------------------------------ validation
COSINE = S.CosineDecay(0.1, 10)
INVALID = [
    (lambda: S.StepDecay(0.1, 0), ValueError, r"`step_size` must be an integer >= 1, got 0"),
    (lambda: S.StepDecay(0.1, 2.5), TypeError, r"`step_size` must be an integer, got 2.5"),
    (lambda: S.StepDecay(-0.1, 3), ValueError, r"`initial_learning_rate` must be >= 0, got -0.1"),
    (lambda: S.StepDecay(float("nan"), 3), ValueError, r"`initial_learning_rate` must be finite"),
    (lambda: S.StepDecay("0.1", 3), TypeError, r"`initial_learning_rate` must be a real number"),
    (lambda: S.StepDecay(0.1, 3, gamma=0.0), ValueError, r"`gamma` must be > 0, got 0.0"),
    (lambda: S.StepDecay(0.1, 3, gamma=float("inf")), ValueError, r"`gamma` must be finite"),
    (lambda: S.MultiStepDecay(0.1, [5, 5]), ValueError, r"`milestones` must be strictly increasing, got \[5, 5\]"),
    (lambda: S.MultiStepDecay(0.1, [3, 2]), ValueError, r"`milestones` must be strictly increasing"),
    (lambda: S.MultiStepDecay(0.1, []), ValueError, r"`milestones` must not be empty"),
    (lambda: S.MultiStepDecay(0.1, [0, 2]), ValueError, r"`milestones\[0\]` must be an integer >= 1, got 0"),
    (lambda: S.MultiStepDecay(0.1, 5), TypeError, r"`milestones` must be a list of integers, got 5"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.0), ValueError, r"`decay_rate` must be > 0, got 0.0"),
    (lambda: S.ExponentialDecay(0.1, 0, 0.5), ValueError, r"`decay_steps` must be an integer >= 1"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.5, min_learning_rate=0.2), ValueError,
     r"`min_learning_rate` must be in \[0.0, 0.1\], got 0.2"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.5, staircase="yes"), TypeError, r"`staircase` must be a bool"),
    (lambda: S.CosineDecay(0.1, -5), ValueError, r"`decay_steps` must be an integer >= 1, got -5"),
    (lambda: S.CosineDecay(0.1, 10, min_learning_rate=-0.01), ValueError, r"`min_learning_rate` must be in"),
    (lambda: S.CosineRestarts(0.1, 10, t_mul=0.5), ValueError, r"`t_mul` must be >= 1, got 0.5"),
    (lambda: S.CosineRestarts(0.1, 10, m_mul=-1.0), ValueError, r"`m_mul` must be >= 0, got -1.0"),
    (lambda: S.CosineRestarts(0.1, 0), ValueError, r"`first_decay_steps` must be an integer >= 1"),
    (lambda: S.Linear(0.0, 1.0, 0), ValueError, r"`steps` must be an integer >= 1, got 0"),
    (lambda: S.Linear(float("inf"), 1.0, 5), ValueError, r"`initial_value` must be finite"),
    (lambda: S.Warmup(COSINE, -1), ValueError, r"`warmup_steps` must be an integer >= 0, got -1"),
    (lambda: S.Warmup(COSINE, 5, shape="quadratic"), ValueError,
     r"`shape` must be one of 'linear', 'cosine', 'exponential', 'constant'; got 'quadratic'"),
    (lambda: S.Warmup(COSINE, 5, shape="exponential"), ValueError,
     r"`initial_learning_rate` must be > 0 when `shape` is 'exponential', got 0.0"),
    (lambda: S.Warmup("fast", 5), TypeError, r"`schedule` must be a `keras.optimizers.schedules"),
    (lambda: S.Warmup(lambda t: 0.1, 5), TypeError, r"`schedule` must be a"),
    (lambda: S.Sequential([COSINE, COSINE], [5, 6]), ValueError,
     r"`boundaries` must have len\(schedules\) - 1 = 1 entries, got 2"),
    (lambda: S.Sequential([COSINE, COSINE, COSINE], [5, 3]), ValueError, r"`boundaries` must be strictly increasing"),
    (lambda: S.Sequential([COSINE, COSINE], [0]), ValueError, r"`boundaries\[0\]` must be an integer >= 1"),
    (lambda: S.Sequential([], []), ValueError, r"`schedules` must not be empty"),
    (lambda: S.Sequential([COSINE, "x"], [5]), TypeError, r"`schedules\[1\]` must be a"),
    (lambda: S.OneCycle(1.0, 100, pct_start=0.0), ValueError, r"`pct_start` must be in \(0.0, 1.0\), got 0.0"),
    (lambda: S.OneCycle(1.0, 100, pct_start=1.0), ValueError, r"`pct_start` must be in \(0.0, 1.0\), got 1.0"),
    (lambda: S.OneCycle(1.0, 100, anneal="cosine"), ValueError, r"`anneal` must be one of 'cos', 'linear'; got 'cosine'"),
    (lambda: S.OneCycle(1.0, 10, pct_start=0.05), ValueError,
     r"`pct_start` \* `total_steps` must give every phase a positive length, got pct_start=0.05, total_steps=10"),
    (lambda: S.OneCycle(1.0, 100, pct_start=0.6, three_phase=True), ValueError, r"must give every phase a positive length"),
    (lambda: S.OneCycle(0.0, 100), ValueError, r"`max_learning_rate` must be > 0, got 0.0"),
    (lambda: S.OneCycle(1.0, 1), ValueError, r"`total_steps` must be an integer >= 2, got 1"),
    (lambda: S.OneCycle(1.0, 100, div_factor=0), ValueError, r"`div_factor` must be > 0"),
    (lambda: S.OneCycle(1.0, 100, final_div_factor=-1), ValueError, r"`final_div_factor` must be > 0"),
    (lambda: S.OneCycle(1.0, 100, three_phase=1), TypeError, r"`three_phase` must be a bool"),
    (lambda: S.OneCycle(1.0, 100).momentum_schedule(0.95, 0.85), ValueError,
     r"`max_momentum` must be in \[0.95, 1.0\), got 0.85"),
    (lambda: S.OneCycle(1.0, 100).momentum_schedule(1.0, 1.0), ValueError, r"`base_momentum` must be in \[0.0, 1.0\)"),
    (lambda: S.Cyclical(0.1, 0.05, 4), ValueError, r"`max_learning_rate` must be >= `base_learning_rate` \(0.1\), got 0.05"),
    (lambda: S.Cyclical(0.1, 1.0, 4, mode="sine"), ValueError,
     r"`mode` must be one of 'triangular', 'triangular2', 'exp_range'; got 'sine'"),
    (lambda: S.Cyclical(0.1, 1.0, 4, mode="exp_range", gamma=0.0), ValueError, r"`gamma` must be > 0"),
    (lambda: S.Cyclical(0.1, 1.0, 0), ValueError, r"`step_size` must be an integer >= 1"),
    (lambda: S.WarmupStableDecay(1.0, 10, 10, 0), ValueError, r"`decay_steps` must be an integer >= 1, got 0"),
    (lambda: S.WarmupStableDecay(1.0, -1, 10, 10), ValueError, r"`warmup_steps` must be an integer >= 0"),
    (lambda: S.WarmupStableDecay(1.0, 10, -5, 10), ValueError, r"`stable_steps` must be an integer >= 0"),
    (lambda: S.WarmupStableDecay(1.0, 1, 1, 1, decay_shape="exp"), ValueError,
     r"`decay_shape` must be one of 'linear', 'cosine', 'sqrt'; got 'exp'"),
    (lambda: S.WarmupStableDecay(1.0, 1, 1, 1, min_learning_rate=2.0), ValueError, r"`min_learning_rate` must be in \[0.0, 1.0\]"),
    (lambda: S.InverseSqrt(1.0, 0), ValueError, r"`warmup_steps` must be an integer >= 1, got 0"),
    (lambda: S.InverseSqrt(-1.0, 10), ValueError, r"`peak_learning_rate` must be >= 0"),
    (lambda: S.DemonMomentum(1.0, 10), ValueError, r"`initial_momentum` must be in \[0.0, 1.0\), got 1.0"),
    (lambda: S.DemonMomentum(0.9, 0), ValueError, r"`total_steps` must be an integer >= 1, got 0"),
    (lambda: S.epochs(-1, 100), ValueError, r"`n` must be an integer >= 0, got -1"),
    (lambda: S.epochs(2, 0), ValueError, r"`steps_per_epoch` must be an integer >= 1, got 0"),
    (lambda: S.epochs(float("nan"), 10), ValueError, r"`n` must be finite"),
    (lambda: S.epochs([1, -2.5], 10), ValueError, r"`n\[1\]` must be >= 0, got -2.5"),
    (lambda: S.plot([], 10), ValueError, r"`schedules` must hold at least one schedule"),
    (lambda: S.plot(COSINE, 0), ValueError, r"`steps` must be >= 1 when given as an int, got 0"),
]


@pytest.mark.parametrize("make, error, message", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_arguments_name_the_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()
