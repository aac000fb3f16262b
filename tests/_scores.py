"""A callback that decides which epochs improve, for the plateau-reducer tests."""

import keras


class Inject(keras.callbacks.Callback):
    """Writes `values[epoch]` as `logs["score"]` before the callbacks after it run."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.values[epoch]
