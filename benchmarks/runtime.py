"""What the benchmark runs on: backend, device, memory use, dtype policy.

Framework modules are imported inside the branch for their backend, so that a run under
KERAS_BACKEND=jax or torch never imports TensorFlow.
"""

import contextlib
import resource
import sys

import keras
import numpy as np

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def describe_device():
    """Returns e.g. "GPU (NVIDIA H100)" or "CPU" for the device the Keras backend computes on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU ({details.get('device_name', gpus[0].name)})"
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform.upper()} ({device.device_kind})"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU"


def reset_gpu_peak_memory():
    """Starts a fresh GPU high-water mark where the backend allows it (TensorFlow, torch)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def gpu_peak_memory_bytes():
    """The GPU memory high-water mark in bytes, or None on CPU or when the backend can't say.

    Under JAX the mark cannot be reset, so it covers the whole process so far.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return int(stats["peak_bytes_in_use"])
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    return None


def peak_rss_bytes():
    """The process's resident-memory high-water mark so far (it never goes down)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def slot_bytes(optimizer):
    """Bytes of the optimizer's slots (velocities, moments, int8 scales): what grows with the
    model. Step counters, the learning-rate variable, the plateau state and diagnostics
    buffers are left out."""
    state = getattr(optimizer, "_state_variables", lambda: optimizer.variables)()
    return variable_bytes([v for v in state if len(v.shape) > 0
                           and not v.path.endswith("plateau_state")])


def variable_bytes(variables):
    """Total size in bytes of a list of Keras variables."""
    return int(sum(np.prod(v.shape, dtype=np.int64) * np.dtype(v.dtype).itemsize
                   for v in variables))


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras's global dtype policy to `name` for the block, then restores the old one."""
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
