"""Momentum recipes against Adam and AdamW on a small residual CNN, full Fashion-MNIST.

    python -m benchmarks.fashion_cnn                    # 7 recipes, 1 seed, ~27 min on 2 CPU cores
    python -m benchmarks.fashion_cnn --repeats 3        # mean ± std over 3 seeds
    python -m benchmarks.fashion_cnn --quick            # seconds-long smoke run
    python -m benchmarks.fashion_cnn --quick --dataset embedded   # the same without Fashion-MNIST
    python -m benchmarks.fashion_cnn --range-test       # the range tests the rates come from

Writes what `benchmarks.mnist_mlp` writes (results.json with the same fields, curves.png,
time_to_accuracy.png, one TensorBoard run with diagnostics per training run) under --out,
runs/fashion_cnn by default. The data are the IDX files of Debian's `dataset-fashion-mnist`
(`--data-dir` for others). With --range-test it writes range_test.json and range_test.png.
"""

import json
import os
import sys

import keras

from benchmarks import cnn_configs, runtime, suite
from benchmarks.training import compile_model
from keras_momentum import find_learning_rate

STEM_FILTERS = 32
STAGE_FILTERS = (32, 64)
PADDING = 2  # random crops of 28×28 out of the image zero-padded to 32×32
RANGE_TEST_STEPS = 200
RANGE_TEST_FAMILIES = {
    "momentum SGD": lambda: cnn_configs.keras_sgd_momentum(1, 1),
    "Adam": lambda: keras.optimizers.Adam(),
    "AdamW": lambda: keras.optimizers.AdamW(weight_decay=cnn_configs.ADAMW_WEIGHT_DECAY),
}


def residual_block(x, filters, stride):
    """Two 3×3 convolutions with batch normalisation and a shortcut (He et al., 2016); the
    shortcut is a strided 1×1 convolution where the shape changes."""
    shortcut = x
    x = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False)(shortcut)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))


def build_model(num_classes=10):
    """A small ResNet for 28×28 grey images, taking them flattened as (n, 784).

    Augmentation (training only): random 28×28 crops of the image zero-padded by 2 pixels,
    written as a random shift of up to 2 pixels each way with zero fill, and random horizontal
    flips. (Keras's `RandomCrop` would resize the padded image at inference instead of
    leaving the test images as they are.) Then a 3×3 convolution with 32 filters at 28×28, one residual
    block of 32 filters at 14×14 and one of 64 at 7×7 (each entered with stride 2), global
    average pooling and a softmax that runs in float32 whatever the dtype policy.
    """
    inputs = keras.Input((28 * 28,))
    x = keras.layers.Reshape((28, 28, 1))(inputs)
    x = keras.layers.RandomTranslation(PADDING / 28, PADDING / 28, fill_mode="constant",
                                       interpolation="nearest")(x)
    x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.Conv2D(STEM_FILTERS, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for filters in STAGE_FILTERS:
        x = residual_block(x, filters, stride=2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(num_classes)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


BENCHMARK = suite.Benchmark(
    name="fashion_cnn",
    description="Train a small residual CNN with augmentation on Fashion-MNIST with each "
    "optimizer recipe and compare.",
    model_title="residual CNN (32-32-64, BN, crop+flip)",
    build_model=build_model,
    configs=cnn_configs.CONFIGS,
    default_configs=cnn_configs.DEFAULT_CONFIGS,
    quick_configs=cnn_configs.QUICK_CONFIGS,
    default_dataset="fashion_mnist",
    default_epochs=5,
    default_repeats=1,
    # float32: on TensorFlow's CPU kernels this network trains faster in float32 than in
    # mixed_bfloat16 (RESULTS.md); pass --precision mixed_bfloat16 on hardware where it pays.
    default_precision="float32",
    # Reached by the scheduled momentum recipes within the 5 default epochs (RESULTS.md).
    target_accuracy={"embedded": 0.9, "mnist": 0.99, "fashion_mnist": 0.88},
)


def build_parser():
    parser = suite.build_parser(BENCHMARK)
    parser.add_argument("--range-test", action="store_true",
                        help="instead of training, run the learning-rate range test for each "
                        f"optimizer family ({', '.join(RANGE_TEST_FAMILIES)}) and plot it")
    return parser


def parse_args(argv):
    return suite.parse_args(BENCHMARK, argv, build_parser())


def range_tests(args, dataset):
    """One range test per optimizer family on a fresh model: suggestions, curves, a plot."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (plots.py chose the Agg backend)

    os.makedirs(args.out, exist_ok=True)
    steps = 20 if args.quick else RANGE_TEST_STEPS
    found = {}
    figure, axis = plt.subplots(figsize=(8, 5))
    for family, make in RANGE_TEST_FAMILIES.items():
        keras.backend.clear_session()
        keras.utils.set_random_seed(args.seed)
        with runtime.dtype_policy(args.precisions[0]):
            model = build_model()
            compile_model(model, make())
            print(f"range test: {family}", flush=True)
            result = find_learning_rate(model, dataset.x_train, dataset.y_train,
                                        batch_size=args.batch_size, min_learning_rate=1e-5,
                                        max_learning_rate=10.0, steps=steps, verbose=0)
        print(f"  {result!r}; suggestions " + ", ".join(
            f"{rule} {rate:.3g}" for rule, rate in result.suggestions.items()), flush=True)
        found[family] = {"suggestions": result.suggestions, "stop_reason": result.stop_reason,
                         "learning_rates": result.learning_rates.tolist(),
                         "smoothed_losses": result.smoothed_losses.tolist()}
        axis.plot(result.learning_rates, result.smoothed_losses, label=family)
        axis.axvline(result.suggestion, color=axis.lines[-1].get_color(), linestyle=":")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed training loss")
    axis.set_ylim(top=min(5.0, axis.get_ylim()[1]))
    axis.set_title(f"Range tests, {BENCHMARK.model_title} on {dataset.title} "
                   "(dotted: steepest descent)", fontsize=9)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.savefig(os.path.join(args.out, "range_test.png"), dpi=120, bbox_inches="tight")
    plt.close(figure)
    with open(os.path.join(args.out, "range_test.json"), "w") as f:
        json.dump(found, f, indent=1)
    return found


def main(argv=None):
    args, dataset = parse_args(argv)
    if args.range_test:
        range_tests(args, dataset)
    else:
        suite.run(BENCHMARK, args, dataset, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
