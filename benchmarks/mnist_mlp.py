"""Momentum optimizers on an MNIST MLP: accuracy, time to accuracy, throughput, memory.

    python -m benchmarks.mnist_mlp                      # default configurations, 2 seeds
    python -m benchmarks.mnist_mlp --quick              # seconds-long smoke run
    python -m benchmarks.mnist_mlp --dataset fashion_mnist --optimizers momentum,adam \\
        --precision float32,mixed_bfloat16 --epochs 20 --repeats 3

Writes results.json, curves.png, time_to_accuracy.png and one TensorBoard run per training run
(tb/<config>-<precision>-seed<k>) under --out. Works under any Keras backend (KERAS_BACKEND).
What the diagnostics cost is measured apart: `python -m benchmarks.diagnostics_overhead`.
"""

import sys

from benchmarks import configs, data, suite
from benchmarks.training import build_model

BENCHMARK = suite.Benchmark(
    name="mnist_mlp",
    description="Train a 784-512-256-10 MLP with each optimizer configuration and compare.",
    model_title="784-512-256-10 MLP",
    build_model=build_model,
    configs=configs.CONFIGS,
    default_configs=configs.DEFAULT_CONFIGS,
    quick_configs=configs.QUICK_CONFIGS,
    default_dataset="embedded",
    default_epochs=10,
    default_repeats=2,
    default_precision="float32",
    target_accuracy=data.TARGET_ACCURACY,
)


def parse_args(argv):
    return suite.parse_args(BENCHMARK, argv)


def main(argv=None):
    args, dataset = parse_args(argv)
    suite.run(BENCHMARK, args, dataset, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
