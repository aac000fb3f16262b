"""Killing training with SIGKILL and resuming it with `BackupAndRestore` loses nothing.

`scripts/resume_run.py` trains (SGD with a warmup schedule, weight decay and
`skip_nonfinite`, a batch with a NaN in every epoch, the plateau reducer, both diagnostics
loggers); the test kills it in the middle of epoch 2, starts it again, and compares with the
state the killed process held when it wrote its last backup and with an uninterrupted run.

Two backup frequencies:

* `save_freq="epoch"`: the restart continues from the end of epoch 1 and ends bit-for-bit
  where the uninterrupted run ends.
* `save_freq=2` (batches): Keras 3 (3.15) restores the mid-epoch backup but then runs the
  interrupted epoch again from its first batch, so the batches of epoch 2 before the backup
  point are trained twice. Nothing of the optimizer's state is lost (it is the backed-up
  state exactly, and the update count keeps counting), but the result is not the
  uninterrupted run's: use `save_freq="epoch"` for exact resumption.

TensorBoard steps "without overlap", precisely. With `R` the update count restored from the
backup, `K` the count when the process was killed and `N` the final count, for every tag the
loggers write:

1. within one process's event files no step repeats;
2. the killed process logged exactly the updates `1..K` (the loggers flush every
   `flush_secs`, so nothing was lost here; a kill can only lose the last `flush_secs`);
3. the resumed process logged exactly `R+1..N`: it continues after the restored count
   rather than starting again from 1, and logs every update once;
4. so the only steps present twice in the run directory are `R+1..K`: the updates that were
   done, lost with the killed process and done again from the backup. With an epoch backup
   they are replayed on the same batches and hold the same values, and the union of the
   records equals the uninterrupted run's log.
"""

import glob
import json
import os
import signal

import numpy as np
import pytest
from _processes import kill_all, start, wait_all, wait_for_file
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

pytestmark = pytest.mark.tensorflow

STEPS_PER_EPOCH, EPOCHS = 6, 4  # as in scripts/resume_run.py; batch 1 of each epoch is skipped
UPDATES_PER_EPOCH = STEPS_PER_EPOCH - 1
# scenario: (save_freq, kill epoch, kill batch, R: restored count, K: count at the kill)
SCENARIOS = {
    # Backup at the end of epoch 1; killed after batches 0, 2, 3 of epoch 2 (1 is skipped).
    "epoch": ("epoch", 2, 3, 2 * UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH + 3),
    # Backups after batches 1, 3, 5 of each epoch; the last before the kill is after batch 3.
    "batches": ("2", 2, 4, 2 * UPDATES_PER_EPOCH + 3, 2 * UPDATES_PER_EPOCH + 4),
}
TAGS = {"learning_rate", "momentum", "weight_decay", "gradient_norm/global", "velocity_norm/global"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both scenarios, run side by side: start, kill at the kill point, resume."""
    works = {name: tmp_path_factory.mktemp(name) for name in SCENARIOS}
    processes, logs = [], []
    try:
        killed = {}
        for name, (frequency, epoch, batch, _, _) in SCENARIOS.items():
            log = works[name] / "killed.log"
            killed[name] = start("resume_run.py", "killed", works[name], frequency, epoch, batch, log=log)
            processes.append(killed[name])
            logs.append(log)
        markers = {}
        for name, process in killed.items():
            wait_for_file(works[name] / "ready.json", process, timeout=150, log=works[name] / "killed.log")
            markers[name] = json.loads((works[name] / "ready.json").read_text())
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
        resumed = []
        for name, (frequency, *_) in SCENARIOS.items():
            log = works[name] / "resumed.log"
            extra = ["--reference"] if name == "epoch" else []
            resumed.append(start("resume_run.py", "resumed", works[name], frequency, *extra, log=log))
            logs.append(log)
        processes += resumed
        wait_all(resumed, timeout=180, logs=logs)
    finally:
        kill_all(processes)
    return {name: (works[name], markers[name]) for name in SCENARIOS}


def load(work, name):
    with np.load(work / f"{name}.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def events_by_process(log_dir):
    """{pid: {tag: {step: value}}} from `<log_dir>/train`; a step repeated in one process fails."""
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*"))):
        pid = int(os.path.basename(path).split(".")[-3])
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                series = out.setdefault(pid, {}).setdefault(value.tag, {})
                assert event.step not in series, f"{value.tag} written twice at {event.step} by {pid}"
                series[event.step] = float(tensor_util.make_ndarray(value.tensor))
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_restart_restores_exactly_the_backed_up_state(runs, scenario):
    work, marker = runs[scenario]
    restored_count, killed_count = SCENARIOS[scenario][3:]
    assert marker["iterations"] == killed_count
    backed_up, restored = load(work, "backed_up"), load(work, "restored")
    assert sorted(restored) == sorted(backed_up)
    for key in backed_up:
        np.testing.assert_array_equal(restored[key], backed_up[key], err_msg=key)
    assert int(restored["iterations"]) == restored_count
    assert int(restored["velocity_count"]) == 4
    # The plateau reducer halved the rate at the end of epoch 1; one NaN batch per epoch begun.
    # Plateau state after epoch 1: factor 1, best 1.0, one epoch without improvement.
    np.testing.assert_array_equal(restored["multiplier"], [1.0, 1.0, 1.0, 0.0])
    assert int(restored["nonfinite_steps"]) == (2 if scenario == "epoch" else 3)


def test_resuming_from_an_epoch_backup_equals_the_uninterrupted_run(runs):
    work, _ = runs["epoch"]
    resumed, reference = load(work, "resumed"), load(work, "reference")
    assert sorted(resumed) == sorted(reference)
    for key in reference:
        np.testing.assert_allclose(resumed[key], reference[key], rtol=0, atol=1e-6, err_msg=key)
    assert int(resumed["iterations"]) == EPOCHS * UPDATES_PER_EPOCH
    assert int(resumed["nonfinite_steps"]) == EPOCHS
    assert float(resumed["multiplier"][0]) == 0.5  # reduced after the restart


def test_resuming_from_a_batch_backup_replays_the_interrupted_epoch(runs):
    work, _ = runs["batches"]
    restored, resumed = load(work, "restored"), load(work, "resumed")
    restored_count = SCENARIOS["batches"][3]
    # Keras 3.15 runs all of epoch 2 again on top of the mid-epoch state: documented above.
    assert int(resumed["iterations"]) == restored_count + 2 * UPDATES_PER_EPOCH
    assert int(resumed["nonfinite_steps"]) == int(restored["nonfinite_steps"]) + 2


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tensorboard_steps_continue_without_overlap(runs, scenario):
    work, marker = runs[scenario]
    restored_count, killed_count = SCENARIOS[scenario][3:]
    final_count = int(load(work, "resumed")["iterations"])
    processes = events_by_process(work / "logs")  # rule 1 is checked while reading
    assert sorted(processes) != [] and marker["pid"] in processes and len(processes) == 2
    killed = processes.pop(marker["pid"])
    (resumed,) = processes.values()
    assert TAGS <= set(killed) and set(killed) == set(resumed)
    for tag in killed:
        assert sorted(killed[tag]) == list(range(1, killed_count + 1)), tag  # rule 2
        assert sorted(resumed[tag]) == list(range(restored_count + 1, final_count + 1)), tag  # 3
        twice = set(killed[tag]) & set(resumed[tag])
        assert twice == set(range(restored_count + 1, killed_count + 1)), tag  # rule 4
    if scenario != "epoch":
        return
    (reference,) = events_by_process(work / "reference_logs").values()
    assert set(reference) == set(killed)
    for tag in killed:
        for step in sorted(set(killed[tag]) & set(resumed[tag])):
            assert killed[tag][step] == pytest.approx(resumed[tag][step], rel=1e-6, abs=1e-9)
        union = {**killed[tag], **resumed[tag]}
        assert sorted(union) == sorted(reference[tag]), tag
        for step, value in reference[tag].items():
            assert union[step] == pytest.approx(value, rel=1e-6, abs=1e-9), (tag, step)


def test_tensorboard_shows_each_update_once_after_a_restart(runs):
    """What TensorBoard's own loader (which purges records a restart orphaned) displays."""
    work, marker = runs["batches"]
    restored_count = SCENARIOS["batches"][3]
    processes = events_by_process(work / "logs")
    killed = processes.pop(marker["pid"])
    (resumed,) = processes.values()
    expected = {s: v for s, v in killed["learning_rate"].items() if s <= restored_count}
    expected.update(resumed["learning_rate"])
    accumulator = plugin_event_accumulator.EventAccumulator(str(work / "logs" / "train"))
    accumulator.Reload()
    shown = [
        (event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
        for event in accumulator.Tensors("learning_rate")
    ]
    assert shown == sorted(expected.items())
