"""The optimizer recipes the Fashion-MNIST CNN benchmark compares, by name.

Factories `(steps_per_epoch, epochs) -> optimizer`, as in `benchmarks.configs`. Every rate was
chosen the same way for every family, as a user would: one learning-rate range test
(`python -m benchmarks.fashion_cnn --range-test`, `keras_momentum.find_learning_rate`) per
optimizer family on this network, and the rate it suggests:

- the constant rate, or the peak of a warmup-and-cosine schedule, is the range test's
  "steepest" suggestion (where the loss falls fastest): SGD_RATE for momentum SGD (momentum
  0.9, weight decay 5e-4), ADAM_RATE for Adam, ADAMW_RATE for AdamW (decoupled weight decay
  0.05);
- one-cycle peaks at its "minimum" suggestion (a tenth of the rate with the smallest
  smoothed loss), the larger rate Smith's policy is built to pass through and fastai's
  choice for it: ONE_CYCLE_PEAK.

RESULTS.md ("Convolutional network") has the range test's suggestions these come from.
"""

import keras

from keras_momentum.callbacks import StochasticWeightAveraging
from keras_momentum.models import SharpnessAwareMinimization
from keras_momentum.optimizers import SGD
from keras_momentum.schedules import CosineDecay, OneCycle, Warmup

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
SGD_RATE = 0.05
ONE_CYCLE_PEAK = 0.47
ADAM_RATE = 2e-3
ADAMW_RATE = 2e-3
ADAMW_WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1
# SWA: the last third of the epochs (at least 2) are averaged at a constant rate.
SWA_RATE_FRACTION = 0.1


def keras_sgd_momentum(steps_per_epoch, epochs):
    """Keras's own `SGD` with momentum 0.9 and weight decay at a constant rate."""
    return keras.optimizers.SGD(SGD_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def _warmup_cosine(peak, total_steps):
    warmup_steps = max(1, int(total_steps * WARMUP_FRACTION))
    return Warmup(CosineDecay(peak, decay_steps=max(1, total_steps - warmup_steps)),
                  warmup_steps=warmup_steps)


def nesterov_warmup_cosine(steps_per_epoch, epochs):
    """Ours: Nesterov momentum, linear warmup over a tenth of training, cosine decay to zero,
    L2 weight decay added to the gradient (PyTorch's form)."""
    return SGD(_warmup_cosine(SGD_RATE, steps_per_epoch * epochs), momentum=MOMENTUM,
               nesterov=True, formulation="pytorch", weight_decay=WEIGHT_DECAY,
               weight_decay_mode="coupled")


def one_cycle(steps_per_epoch, epochs):
    """Smith's one-cycle policy: the rate rises then falls while momentum falls from 0.95 to
    0.85 and rises back."""
    schedule = OneCycle(max_learning_rate=ONE_CYCLE_PEAK, total_steps=steps_per_epoch * epochs)
    return SGD(schedule, momentum=schedule.momentum_schedule(), formulation="pytorch",
               weight_decay=WEIGHT_DECAY, weight_decay_mode="coupled")


def swa_start_epoch(epochs):
    return epochs - max(2, epochs // 3) if epochs > 2 else epochs - 1


def nesterov_swa(steps_per_epoch, epochs):
    """"nesterov_warmup_cosine" whose cosine ends at the start of averaging; stochastic weight
    averaging (Izmailov et al., 2018) then holds the rate at SWA_RATE_FRACTION of the peak
    and averages the weights of each remaining epoch, batch-norm statistics recomputed at the
    end."""
    steps = steps_per_epoch * swa_start_epoch(epochs)
    return SGD(_warmup_cosine(SGD_RATE, max(2, steps)), momentum=MOMENTUM, nesterov=True,
               formulation="pytorch", weight_decay=WEIGHT_DECAY, weight_decay_mode="coupled")


nesterov_swa.callbacks = lambda steps_per_epoch, epochs, x_train: [StochasticWeightAveraging(
    start_epoch=swa_start_epoch(epochs), swa_learning_rate=SGD_RATE * SWA_RATE_FRACTION,
    batch_norm_data=[x_train[start:start + 500]
                     for start in range(0, min(10_000, len(x_train)), 500)])]


def sam(steps_per_epoch, epochs):
    """SAM (Foret et al., 2021; ρ = 0.05) around "nesterov_warmup_cosine": two passes a step."""
    return nesterov_warmup_cosine(steps_per_epoch, epochs)


sam.wrap_model = lambda model: SharpnessAwareMinimization(model, rho=0.05)


def adam(steps_per_epoch, epochs):
    """Keras's `Adam` at a constant rate, its usual recipe."""
    return keras.optimizers.Adam(ADAM_RATE)


def adamw(steps_per_epoch, epochs):
    """Keras's `AdamW` with decoupled weight decay 0.05 and the same warmup and cosine decay
    as ours, the usual AdamW recipe."""
    return keras.optimizers.AdamW(_warmup_cosine(ADAMW_RATE, steps_per_epoch * epochs),
                                  weight_decay=ADAMW_WEIGHT_DECAY)


CONFIGS = {
    "keras_sgd_momentum": keras_sgd_momentum,
    "nesterov_warmup_cosine": nesterov_warmup_cosine,
    "one_cycle": one_cycle,
    "nesterov_swa": nesterov_swa,
    "sam": sam,
    "adam": adam,
    "adamw": adamw,
}
DEFAULT_CONFIGS = tuple(CONFIGS)
QUICK_CONFIGS = ("keras_sgd_momentum", "nesterov_swa", "adam")
