"""Optimizer update time: keras_momentum SGD vs Keras's SGD vs torch.optim.SGD.

    python -m benchmarks.optimizer_step [--params 32000000] [--repeats 7] [--quick]

One update of ~32 M float32 parameters in several variables, dense gradients,
momentum 0.9. Every contender runs interleaved in one process (a round of all of them,
repeated), so the printed ratios compare like with like on a shared machine. Also
measures the memory bandwidth of a streaming `a += b` on buffers of the same size and the memory roofline: an
SGD-momentum update must read θ, g, v and write θ, v, 20 bytes a parameter, so it can't
beat 20·N / bandwidth.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_momentum.optimizers import SGD  # noqa: E402


def shapes_for(total):
    """Matrices in the proportions of an MLP's layers, summing to about `total`."""
    side = max(8, int((total / 2.0) ** 0.5))
    shapes = [(side, side), (side, side // 2), (side // 2, side // 2), (side // 2, side // 4)]
    shapes.append((side,))
    return shapes


def keras_contenders(shapes, momentum):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=s).astype("float32") * 1e-3) for s in shapes]
    optimizers = {
        "keras_momentum SGD fused (graph)": (lambda: SGD(0.01, momentum=momentum), False),
        "keras_momentum SGD fused (XLA)": (lambda: SGD(0.01, momentum=momentum), True),
        "keras_momentum SGD generic (graph)": (lambda: SGD(0.01, momentum=momentum, fused=False), False),
        "keras_momentum SGD generic (XLA)": (lambda: SGD(0.01, momentum=momentum, fused=False), True),
        "keras_momentum SGD pytorch fused (graph)": (
            lambda: SGD(0.01, momentum=momentum, formulation="pytorch"), False),
        "keras.optimizers.SGD (graph)": (lambda: keras.optimizers.SGD(0.01, momentum=momentum), False),
        "keras.optimizers.SGD (XLA)": (lambda: keras.optimizers.SGD(0.01, momentum=momentum), True),
    }
    contenders = {}
    for name, (make, jit) in optimizers.items():
        variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
        optimizer = make()
        optimizer.build(variables)
        contenders[name] = _compiled_apply(tf, optimizer, grads, variables, jit)
    return contenders


def _compiled_apply(tf, optimizer, grads, variables, jit):
    def step():
        optimizer.apply(grads, variables)

    return tf.function(step, jit_compile=jit, autograph=False)


def copy_contender(shapes):
    import tensorflow as tf

    sources = [tf.Variable(tf.ones(s)) for s in shapes]
    targets = [tf.Variable(tf.zeros(s)) for s in shapes]

    # assign() would only share the buffer; assign_add really reads two buffers and
    # writes one, 12 bytes a parameter.
    @tf.function
    def copy():
        for source, target in zip(sources, targets):
            target.assign_add(source)

    return copy


def torch_contenders(shapes, momentum):
    try:
        import torch
    except ImportError:
        return {}, "torch is not installed: torch.optim.SGD skipped (pip install torch)"
    torch.set_num_threads(os.cpu_count() or 1)
    contenders = {}
    for variant in ("foreach", "fused"):
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape) * 1e-3
        try:
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=momentum, **{variant: True})
            optimizer.step()
        except (RuntimeError, TypeError) as error:
            print(f"torch.optim.SGD({variant}=True) unavailable: {error}")
            continue
        contenders[f"torch.optim.SGD {variant}"] = optimizer.step
    return contenders, f"torch {torch.__version__}"


def measure(contenders, repeats, steps):
    for step in contenders.values():
        for _ in range(3):
            step()
    times = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, step in contenders.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps * 1e3)
        print(f"  round {repeat + 1}/{repeats} done", flush=True)
    return {name: statistics.median(t) for name, t in times.items()}, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=32_000_000)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="updates timed per round")
    parser.add_argument("--quick", action="store_true", help="1 M parameters, 2 rounds")
    parser.add_argument("--out", default="runs/optimizer_step")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "tensorflow":
        parser.error("this benchmark compares TensorFlow update paths; use KERAS_BACKEND=tensorflow")
    if args.quick:
        args.params, args.repeats, args.steps = 1_000_000, 2, 3
    shapes = shapes_for(args.params)
    count = int(sum(np.prod(s) for s in shapes))
    print(f"{count / 1e6:.1f} M parameters in {len(shapes)} variables, momentum {args.momentum}")

    contenders = keras_contenders(shapes, args.momentum)
    torch_steps, torch_note = torch_contenders(shapes, args.momentum)
    contenders.update(torch_steps)
    contenders["stream (read 2 buffers, write 1)"] = copy_contender(shapes)
    medians, samples = measure(contenders, args.repeats, args.steps)

    copy_ms = medians.pop("stream (read 2 buffers, write 1)")
    bandwidth = 12 * count / (copy_ms / 1e3)
    roofline_ms = 20 * count / bandwidth * 1e3
    ours = medians["keras_momentum SGD fused (graph)"]
    ratios = {
        "ours / keras SGD graph": ours / medians["keras.optimizers.SGD (graph)"],
        "ours / keras SGD XLA": ours / medians["keras.optimizers.SGD (XLA)"],
        "roofline / ours (fraction of roofline)": roofline_ms / ours,
    }
    if "torch.optim.SGD fused" in medians:
        ratios["ours / torch fused"] = ours / medians["torch.optim.SGD fused"]
    width = max(len(n) for n in medians) + 2
    print(f"\n{'update path':<{width}} {'ms/step':>9} {'× keras graph':>14}")
    for name, ms in sorted(medians.items(), key=lambda kv: kv[1]):
        print(f"{name:<{width}} {ms:>9.2f} {ms / medians['keras.optimizers.SGD (graph)']:>14.2f}")
    print(f"\ncopy bandwidth {bandwidth / 1e9:.1f} GB/s -> roofline {roofline_ms:.2f} ms "
          "(20 bytes a parameter)")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(torch_note)
    result = {
        "parameters": count, "shapes": shapes, "momentum": args.momentum,
        "repeats": args.repeats, "steps_per_round": args.steps,
        "median_ms": medians, "samples_ms": samples, "copy_ms": copy_ms,
        "copy_bandwidth_bytes_per_s": bandwidth, "roofline_ms": roofline_ms,
        "ratios": ratios, "torch": torch_note, "keras": keras.__version__,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'results.json'}")
    return result


if __name__ == "__main__":
    main()
