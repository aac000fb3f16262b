"""`tf.distribute`: the same numbers as one device, and logs from the chief only.

* `MirroredStrategy` over two logical CPUs (`scripts/mirrored_run.py`, one subprocess,
  because logical devices must be configured before TensorFlow initialises): `fit` and a
  custom loop (`strategy.run` + `optimizer.apply_gradients`) give the weights, slots, update
  count and recorded statistics of one device with the same global batch, for the fused and
  the generic SGD paths, with schedules, LARS, int8 (with cautious steps) and bfloat16
  velocities, and `skip_nonfinite=True` where only the second replica's half of a batch
  holds a NaN (every replica must skip that update).
* `MultiWorkerMirroredStrategy` with two worker processes on 127.0.0.1
  (`scripts/multi_worker_run.py`): a custom loop with this package's SGD, schedules, the
  plateau reducer and both loggers (Keras 3's `fit` does not run under this strategy,
  keras-team/keras#20585). Both workers end identical and equal to one process training on
  the global batches; only the chief writes TensorBoard records.
"""

import glob
import json
import os
import socket

import numpy as np
import pytest
from _processes import environment, kill_all, run, start, wait_all

pytestmark = pytest.mark.tensorflow

MIRRORED_CASES = (
    "fused", "generic", "fused_nan", "generic_nan", "lars", "int8_cautious", "bfloat16_pytorch",
)
MIRRORED_STEPS = 6  # as in scripts/mirrored_run.py, whose `*_nan` cases have one bad batch
WORKER_STEPS, WORKER_EPOCHS = 4, 3  # as in scripts/multi_worker_run.py, one bad batch an epoch


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    path = tmp_path_factory.mktemp("mirrored") / "results.npz"
    run("mirrored_run.py", path, timeout=300)
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    work = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes, logs = [], []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            log = work / f"worker_{index}.log"
            env = environment(TF_CONFIG=json.dumps(config), KERAS_BACKEND="tensorflow")
            processes.append(start("multi_worker_run.py", work, work / "logs", env=env, log=log))
            logs.append(log)
        wait_all(processes, timeout=240, logs=logs)
    finally:
        kill_all(processes)  # a worker whose peer died would wait for it forever
    results = []
    for index in range(2):
        with np.load(work / f"worker_{index}.npz") as arrays:
            results.append({key: arrays[key] for key in arrays.files})
    return work, results


@pytest.mark.parametrize("mode", ["fit", "custom"])
@pytest.mark.parametrize("case", MIRRORED_CASES)
def test_mirrored_strategy_matches_one_device(mirrored, case, mode):
    single = {k.split("/", 3)[3]: v for k, v in mirrored.items() if k.startswith(f"{case}/{mode}/single/")}
    replicated = {
        k.split("/", 3)[3]: v for k, v in mirrored.items() if k.startswith(f"{case}/{mode}/mirrored/")
    }
    assert sorted(single) == sorted(replicated)
    assert {"weight/0", "velocity/0", "statistic/gradient_norm/global"} <= set(single)
    for key in single:
        assert np.all(np.isfinite(replicated[key])), key
        np.testing.assert_allclose(replicated[key], single[key], rtol=1e-5, atol=1e-5, err_msg=key)
    bad = case.endswith("_nan")
    assert int(replicated["iterations"]) == MIRRORED_STEPS - bad
    if bad:
        assert int(replicated["nonfinite_steps"]) == 1


def test_multi_worker_replicas_agree_with_one_process(workers):
    _, (chief, other) = workers
    assert int(chief["workers"]) == 2
    names = [k for k in other if k.startswith(("weight/", "velocity/"))] + [
        "iterations", "nonfinite_steps", "multiplier",
    ]
    for name in names:
        np.testing.assert_array_equal(other[name], chief[name], err_msg=name)
        np.testing.assert_allclose(chief[name], chief[f"reference/{name}"], rtol=1e-5, atol=1e-5)
    assert int(chief["iterations"]) == WORKER_EPOCHS * (WORKER_STEPS - 1)
    assert int(chief["nonfinite_steps"]) == WORKER_EPOCHS
    # The plateau reducer halved the rate at the end of epochs 1 and 2 on both workers.
    assert float(chief["multiplier"]) == 0.25


def test_is_chief_under_multi_worker_strategy(workers):
    _, (first, second) = workers
    assert bool(first["is_chief"]) and not bool(second["is_chief"])


def test_only_the_chief_writes_tensorboard_logs(workers):
    work, (chief, _) = workers
    files = glob.glob(os.path.join(work, "logs", "train", "events.out.tfevents.*"))
    writers = {int(os.path.basename(path).split(".")[-3]) for path in files}
    assert writers == {int(chief["pid"])}
