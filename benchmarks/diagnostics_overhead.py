"""What the diagnostics callbacks cost in training speed (opt-in; the main job does not run it).

    python -m benchmarks.diagnostics_overhead                   # 8 models x 4 rounds, ~9 min
    python -m benchmarks.diagnostics_overhead --quick           # seconds-long smoke run
    python -m benchmarks.diagnostics_overhead --breakdown --step-overhead 1500

Fits each model for `--steps` steps with `LearningRateLogger` and `GradientNormLogger` attached
and without them, back to back in a shuffled order, and reports the median of the paired speed
ratios (with over without) per `update_freq` with a bootstrap 90 % interval; the design is in
`benchmarks/overhead.py` (fit level) and `benchmarks/step_overhead.py` (execution level).
Writes results.json and the loggers' event files under --out, which defaults to
runs/diagnostics_overhead, apart from the main job's runs/mnist_mlp.
"""

import argparse
import datetime
import os
import sys

import keras

from benchmarks import configs, data, report, runtime
from benchmarks.idx import IDXError
from benchmarks.overhead import format_overhead, measure_overhead
from benchmarks.step_overhead import format_step_overhead, measure_step_overhead
from benchmarks.training import format_seconds

STEPS, QUICK_STEPS = 100, 10
# Many models, few rounds: a model's pairs share its traces' speeds, and models differ by
# several percent, so the number of models sets the precision.
MODELS, QUICK_MODELS = 8, 1
ROUNDS, QUICK_ROUNDS = 4, 1
QUICK_TRAIN_SIZE, QUICK_TEST_SIZE = 1024, 512


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.diagnostics_overhead",
        description="Measure how much the TensorBoard diagnostics slow training down.",
    )
    parser.add_argument("--optimizer", default="momentum",
                        help=f"configuration out of {', '.join(configs.CONFIGS)} (default momentum)")
    parser.add_argument("--dataset", choices=data.DATASETS, default="embedded")
    parser.add_argument("--data-dir", help="directory of the four IDX files (mnist, fashion_mnist)")
    parser.add_argument("--precision", default="float32", choices=runtime.PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help=f"steps per fit (default {STEPS})")
    parser.add_argument("--models", type=int,
                        help=f"separately built models per variant (default {MODELS})")
    parser.add_argument("--rounds", type=int,
                        help=f"shuffled rounds after the warm-up round (default {ROUNDS})")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure the in-graph part, the hooks' part, A/A models and "
                        "gradient norms only")
    parser.add_argument("--step-overhead", type=int, default=0,
                        help="executions per train function timing the in-graph cost one "
                        "execution at a time (0 skips it; 1500 take about half a minute)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one model, one round of 10 steps, 1024 examples")
    parser.add_argument("--out", default=os.path.join("runs", "diagnostics_overhead"))
    return parser


def parse_args(argv):
    """Parses and checks the command line; quick-mode defaults apply where no flag was given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = {"steps": (STEPS, QUICK_STEPS), "models": (MODELS, QUICK_MODELS),
                "rounds": (ROUNDS, QUICK_ROUNDS)}
    for name, (normal, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    try:
        for flag, value, low in (("steps", args.steps, 1), ("models", args.models, 1),
                                 ("rounds", args.rounds, 1), ("batch-size", args.batch_size, 1),
                                 ("step-overhead", args.step_overhead, 0)):
            if value < low:
                raise ValueError(f"`--{flag}` must be at least {low}, got {value}")
        if args.optimizer not in configs.CONFIGS:
            raise ValueError(f"`--optimizer` must be among {', '.join(configs.CONFIGS)}, "
                             f"got {args.optimizer!r}")
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
    print(f"backend {backend} on {device}; keras {keras.__version__}; {args.optimizer}, "
          f"{args.models} models x {args.rounds} rounds of {args.steps} steps; writing to "
          f"{args.out}", flush=True)
    start = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "benchmark": "diagnostics_overhead",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "started": start.isoformat(timespec="seconds"),
        "backend": backend,
        "device": device,
        "keras_version": keras.__version__,
        "dataset": dataset.name,
        "overhead": measure_overhead(
            args.optimizer, args.precision, dataset, batch_size=args.batch_size,
            steps=args.steps, instances=args.models, rounds=args.rounds,
            log_dir=os.path.join(args.out, "logs"), seed=args.seed, breakdown=args.breakdown,
        ),
        "step_overhead": None,
    }
    if args.step_overhead:
        print("timing the in-graph cost execution by execution ...", flush=True)
        results["step_overhead"] = measure_step_overhead(
            args.optimizer, args.precision, dataset, batch_size=args.batch_size,
            executions=args.step_overhead, seed=args.seed,
        )
    results_path = os.path.join(args.out, "results.json")
    report.write_results(results_path, results)
    print()
    print(format_overhead(results["overhead"]))
    if results["step_overhead"]:
        print()
        print(format_step_overhead(results["step_overhead"]))
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - start).total_seconds()
    print(f"\ntotal {format_seconds(elapsed)}; results in {results_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
