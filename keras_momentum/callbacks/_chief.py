"""Which process of a multi-process run writes the logs.

In multi-worker training every process runs the same callbacks. Writing TensorBoard
records from each of them would put several copies of every step into one run directory
(or race on a shared file system), so the loggers write from one process only, the
chief:

* TensorFlow: the process whose strategy says it should save summaries
  (`strategy.extended.should_save_summary`): for `MultiWorkerMirroredStrategy` the
  `chief` task, or worker 0 when the cluster has no `chief` task; every other strategy
  (default, `MirroredStrategy`, ...) runs in one process, which is the chief.
* JAX: the process with `jax.process_index() == 0`.
* PyTorch: rank 0 of an initialised `torch.distributed` process group.
"""

import keras


def is_chief(model=None):
    """Whether this process should write logs for `model` (or for the current strategy).

    Args:
        model: a Keras model or None. On TensorFlow its `distribute_strategy` is asked
            (the strategy whose scope built the model); without one, the strategy of the
            current scope.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        return bool(getattr(strategy.extended, "should_save_summary", True))
    if backend == "jax":
        import jax  # noqa: PLC0415 (JAX backend only)

        return jax.process_index() == 0
    if backend == "torch":
        import torch.distributed  # noqa: PLC0415 (PyTorch backend only)

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank() == 0
    return True
