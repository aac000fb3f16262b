"""What every training benchmark (`benchmarks.mnist_mlp`, `benchmarks.fashion_cnn`) writes."""

import json

RUN_KEYS = {
    "config", "optimizer", "precision", "seed", "dataset", "train_size", "test_size", "device",
    "backend", "final_test_accuracy", "best_test_accuracy", "epochs_to_target",
    "steps_to_target", "seconds_to_target", "samples_per_second", "peak_rss_bytes",
    "peak_gpu_bytes", "optimizer_slot_bytes", "history",
}
HISTORY_KEYS = {"epoch", "loss", "accuracy", "test_loss", "test_accuracy", "epoch_time_s"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_quick_outputs(out, configs, dataset, sizes):
    """Checks a one-epoch run's results.json, charts and event files under `out`; returns
    the results."""
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [run["config"] for run in runs] == list(configs)
    for run in runs:
        assert RUN_KEYS <= run.keys(), RUN_KEYS - run.keys()
        assert (run["dataset"], run["train_size"], run["test_size"]) == (dataset, *sizes)
        assert 0.0 <= run["final_test_accuracy"] <= run["best_test_accuracy"] <= 1.0
        assert run["samples_per_second"] > 0 and run["peak_rss_bytes"] > 0
        assert len(run["history"]) == 1 and HISTORY_KEYS == run["history"][0].keys()
        assert run["history"][0]["epoch_time_s"] > 0
        assert list((out / "tb").glob(f"{run['config']}*/train/events.out.tfevents.*"))
    assert [summary["config"] for summary in results["summary"]] == list(configs)
    for name in ("curves.png", "time_to_accuracy.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    return results
