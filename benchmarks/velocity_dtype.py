"""Momentum SGD with its velocity stored as float32, bfloat16 or block-wise int8.

    python -m benchmarks.velocity_dtype                     # Fashion-MNIST, 10 epochs, 2 seeds
    python -m benchmarks.velocity_dtype --epochs 1 --seeds 1 --dataset embedded   # smoke run
    python -m benchmarks.velocity_dtype --step-rounds 20    # optimizer step alone (TensorFlow)

Trains the MNIST benchmark's MLP (`training.build_model`) with its "momentum" recipe
(`SGD(0.01, momentum=0.9)`, Keras formulation, batch 128) once per seed and velocity
storage: `velocity_dtype=None` (float32 slots, fused TensorFlow kernel), the same with
`fused=False` (the generic path, which every other storage takes), `"bfloat16"` and
`"int8"`. Runs of one seed share the initial weights, the batch order and the dropout
masks, so their differences come from the storage alone. Prints, per storage: velocity
bytes per parameter (scales included), all optimizer variables' bytes per parameter (the
MNIST benchmark's slot column, over the model's parameters), final test accuracy per seed
and its mean, the difference from float32 slots, and the training step time (epochs 2 on,
evaluation excluded) relative to float32 slots. Writes the rows to `<out>/results.json`.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np

from benchmarks import data
from benchmarks.training import EpochClock, build_model, compile_model
from keras_momentum.optimizers import SGD

LEARNING_RATE = 0.01
MOMENTUM = 0.9
# (label, SGD arguments); the first is the reference the others are compared with.
STORAGES = (
    ("float32", {}),
    ("float32 generic", {"fused": False}),
    ("bfloat16", {"velocity_dtype": "bfloat16"}),
    ("int8", {"velocity_dtype": "int8"}),
)
ITEMSIZE = {"int8": 1, "bfloat16": 2, "float16": 2, "float32": 4, "int32": 4, "int64": 8,
            "float64": 8}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.velocity_dtype",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=data.DATASETS, default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2, help="how many seeds")
    parser.add_argument("--seed", type=int, default=0, help="the first seed; others follow")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=os.path.join("runs", "velocity_dtype"))
    parser.add_argument("--step-rounds", type=int, default=0,
                        help="time the optimizer step alone (TensorFlow) in this many "
                             "interleaved rounds instead of training")
    return parser


def variable_bytes(variables):
    return sum(math.prod(v.shape) * ITEMSIZE[str(v.dtype)] for v in variables)


def train(dataset, seed, arguments, epochs, batch_size):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model()
    optimizer = SGD(LEARNING_RATE, momentum=MOMENTUM, **arguments)
    compile_model(model, optimizer)
    clock = EpochClock()
    history = model.fit(dataset.x_train, dataset.y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(dataset.x_test, dataset.y_test),
                        validation_batch_size=1024, callbacks=[clock], verbose=0).history
    parameters = sum(math.prod(v.shape) for v in model.trainable_variables)
    slots = [x for pair in optimizer._velocity_slots() for x in pair if x is not None]
    steps = math.ceil(len(dataset.x_train) / batch_size)
    timed = clock.train_seconds[1:] or [clock.train_seconds[0] - clock.first_step_seconds[0]]
    return {
        "seed": seed,
        "test_accuracy": float(history["val_accuracy"][-1]),
        "velocity_bytes_per_parameter": variable_bytes(slots) / parameters,
        "optimizer_bytes_per_parameter": variable_bytes(optimizer.variables) / parameters,
        "step_ms": 1000 * sum(timed) / (len(timed) * steps),
    }


def optimizer_step_times(rounds, steps):
    """ms per `optimizer.apply` on the MLP's variables (TensorFlow, one `tf.function` each),
    storages interleaved in every round: `{label: [ms per round]}`. Short interleaved bursts
    see the same machine load, so the per-round ratios to float32 are paired."""
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only)

    keras.utils.set_random_seed(0)
    shapes = [tuple(v.shape) for v in build_model().trainable_variables]
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=s).astype("float32") * 1e-2) for s in shapes]
    steps_of = {}
    for label, arguments in STORAGES:
        variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
        optimizer = SGD(LEARNING_RATE, momentum=MOMENTUM, **arguments)
        optimizer.build(variables)

        run = _compiled_steps(tf, optimizer, grads, variables, steps)
        run()  # trace
        steps_of[label] = run
    times = {label: [] for label, _ in STORAGES}
    for _ in range(rounds):
        for label, run in steps_of.items():
            start = time.perf_counter()
            run()
            times[label].append(1000 * (time.perf_counter() - start) / steps)
    return times


def _compiled_steps(tf, optimizer, grads, variables, steps):
    @tf.function
    def run():
        for _ in tf.range(steps):
            optimizer.apply(grads, variables)

    return run


def print_step_times(times):
    reference = np.asarray(times[STORAGES[0][0]])
    print(f"\n{'storage':<16}{'optimizer step ms':>18}{'vs f32 (median, range over rounds)':>38}")
    for label, values in times.items():
        ratios = np.asarray(values) / reference
        print(f"{label:<16}{np.median(values):>18.3f}{np.median(ratios):>14.2f}"
              f"  ({ratios.min():.2f}-{ratios.max():.2f})")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.step_rounds:
        load = os.getloadavg()[0]
        print(f"optimizer step alone, {args.step_rounds} rounds x 200 steps, "
              f"load average {load:.1f} at start")
        print_step_times(optimizer_step_times(args.step_rounds, 200))
        print(f"load average {os.getloadavg()[0]:.1f} at end")
        return
    dataset = data.load_dataset(args.dataset, args.data_dir)
    load = os.getloadavg()
    seeds = range(args.seed, args.seed + args.seeds)
    print(f"{dataset.title}; {args.epochs} epochs, batch {args.batch_size}, seeds "
          f"{seeds[0]}-{seeds[-1]}, backend {keras.backend.backend()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at start")
    rows = {label: [] for label, _ in STORAGES}
    started = time.perf_counter()
    for seed in seeds:  # storages interleaved, so machine load hits all alike
        for label, arguments in STORAGES:
            rows[label].append(train(dataset, seed, arguments, args.epochs, args.batch_size))
            print(f"  seed {seed} {label}: {rows[label][-1]['test_accuracy']:.4f}", flush=True)
    reference = rows[STORAGES[0][0]]
    print(f"\n{'storage':<16}{'velocity B/param':>17}{'optimizer B/param':>18}"
          f"{'test accuracy per seed':>28}{'mean':>8}{'vs f32':>8}{'step ms':>9}{'vs f32':>8}")
    for label, runs in rows.items():
        accuracy = np.mean([r["test_accuracy"] for r in runs])
        delta = 100 * (accuracy - np.mean([r["test_accuracy"] for r in reference]))
        step = np.median([r["step_ms"] for r in runs])
        ratio = step / np.median([r["step_ms"] for r in reference])
        seeds = " ".join(f"{r['test_accuracy']:.4f}" for r in runs)
        print(f"{label:<16}{runs[0]['velocity_bytes_per_parameter']:>17.3f}"
              f"{runs[0]['optimizer_bytes_per_parameter']:>18.3f}{seeds:>28}"
              f"{accuracy:>8.4f}{delta:>+8.2f}{step:>9.2f}{ratio:>8.2f}")
    print(f"\n{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at end")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"dataset": dataset.name, "epochs": args.epochs, "batch_size": args.batch_size,
                   "load_average_start": load, "load_average_end": os.getloadavg(),
                   "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
