"""End-to-end training speed of the MNIST MLP: this package's SGD against Keras's SGD.

    python -m benchmarks.end_to_end [--dataset embedded] [--precision float32] [--rounds 7]

Same model, data, batch and momentum 0.9 (Keras formulation) for every contender; no
diagnostics attached. The contenders take turns for `rounds` rounds of one epoch each, after
a warm-up epoch (tracing), so drifts in machine load touch all alike; each one's speed is the
median over its rounds, timed from the end of each epoch's first step. Prints samples/s and
the ratio to `keras.optimizers.SGD`.
"""

import argparse
import json
import pathlib
import statistics

import keras

from benchmarks import runtime
from benchmarks.data import DATASETS, load_dataset
from benchmarks.training import EpochClock, build_model, compile_model
from keras_momentum.optimizers import SGD

CONTENDERS = {
    "keras.optimizers.SGD": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "keras_momentum SGD (fused)": lambda: SGD(0.01, momentum=0.9),
    "keras_momentum SGD (generic)": lambda: SGD(0.01, momentum=0.9, fused=False),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="embedded")
    parser.add_argument("--data-dir")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="runs/end_to_end")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset, args.data_dir)
    samples = len(dataset.x_train)
    print(f"{args.dataset}: {samples} samples an epoch, batch {args.batch_size}, {args.precision}, "
          f"{keras.backend.backend()} on {runtime.describe_device()}")
    models = {}
    with runtime.dtype_policy(args.precision):
        for name, make in CONTENDERS.items():
            keras.utils.set_random_seed(0)
            models[name] = build_model()
            compile_model(models[name], make())
        speeds = {name: [] for name in CONTENDERS}
        for round_index in range(args.rounds + 1):
            for name, model in models.items():
                clock = EpochClock()
                model.fit(dataset.x_train, dataset.y_train, batch_size=args.batch_size, epochs=1,
                          verbose=0, callbacks=[clock])
                if round_index > 0:
                    seconds = clock.train_seconds[0] - clock.first_step_seconds[0]
                    speeds[name].append((samples - args.batch_size) / seconds)
            print(f"  round {round_index}/{args.rounds} done", flush=True)
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    base = medians["keras.optimizers.SGD"]
    for name, value in medians.items():
        print(f"{name:30s} {value:10.0f} samples/s  x{value / base:.3f} of keras.optimizers.SGD")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"settings": vars(args), "samples_per_second": medians, "all": speeds,
              "ratio_to_keras_sgd": {n: v / base for n, v in medians.items()}}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
