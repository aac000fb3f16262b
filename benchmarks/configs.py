"""The optimizer configurations the MNIST benchmark can run, by name.

Each entry of CONFIGS maps a name to a factory `(steps_per_epoch, epochs) -> optimizer`; the
factory is called once per run, so every run starts from fresh optimizer state and schedules can
be sized to the run's length.

The momentum runs use learning rate 0.01 with momentum 0.9, an effective step size of
0.01 / (1 - 0.9) = 0.1; plain SGD uses 0.1 directly, so "sgd" against "momentum" compares
momentum's averaging, not two step sizes.
"""

import keras

from keras_momentum.callbacks import StochasticWeightAveraging
from keras_momentum.models import SharpnessAwareMinimization
from keras_momentum.optimizers import LARS, QHM, SGD, AggMo, Lookahead, ScheduleFreeSGD
from keras_momentum.schedules import CosineDecay, OneCycle, Warmup

LEARNING_RATE = 0.01
MOMENTUM = 0.9
# Schedules rise to a peak above the constant rate and spend the end of training below it.
WARMUP_COSINE_PEAK = 0.02
ONE_CYCLE_PEAK = 0.05
ADAM_LEARNING_RATE = 1e-3


def sgd(steps_per_epoch, epochs):
    return SGD(learning_rate=LEARNING_RATE / (1 - MOMENTUM), momentum=0.0)


def momentum(steps_per_epoch, epochs):
    return SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM, formulation="keras")


def nesterov(steps_per_epoch, epochs):
    return SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM, nesterov=True)


def pytorch_dampening(steps_per_epoch, epochs):
    return SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM, dampening=0.1,
               formulation="pytorch")


def adam(steps_per_epoch, epochs):
    return keras.optimizers.Adam(learning_rate=ADAM_LEARNING_RATE)


def nesterov_warmup_cosine(steps_per_epoch, epochs):
    """Linear warmup over the first tenth of training, then cosine decay to zero."""
    total_steps = steps_per_epoch * epochs
    warmup_steps = max(1, total_steps // 10)
    decay = CosineDecay(WARMUP_COSINE_PEAK, decay_steps=max(1, total_steps - warmup_steps))
    return SGD(learning_rate=Warmup(decay, warmup_steps=warmup_steps), momentum=MOMENTUM,
               nesterov=True)


def one_cycle(steps_per_epoch, epochs):
    """Smith's one-cycle policy: learning rate up then down, momentum down then up."""
    schedule = OneCycle(max_learning_rate=ONE_CYCLE_PEAK, total_steps=steps_per_epoch * epochs)
    return SGD(learning_rate=schedule, momentum=schedule.momentum_schedule())


def keras_sgd_momentum(steps_per_epoch, epochs):
    return keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM)


def qhm(steps_per_epoch, epochs):
    """Ma & Yarats' recommended QHM setting (β = 0.999, ν = 0.7) at SGD's step size."""
    return QHM(learning_rate=LEARNING_RATE / (1 - MOMENTUM), momentum=0.999, nu=0.7)


def agg_mo(steps_per_epoch, epochs):
    """Lucas et al.'s default betas (0, 0.9, 0.99)."""
    return AggMo(learning_rate=LEARNING_RATE, betas=(0.0, 0.9, 0.99))


def lars(steps_per_epoch, epochs):
    """LARS with a large batch (see LARGE_BATCH): warmup, then cosine decay."""
    total_steps = steps_per_epoch * epochs
    warmup_steps = max(1, total_steps // 10)
    decay = CosineDecay(2.0, decay_steps=max(1, total_steps - warmup_steps))
    return LARS(Warmup(decay, warmup_steps=warmup_steps), momentum=MOMENTUM, weight_decay=5e-4)


lars.batch_size = 1024  # LARS is meant for batches far above SGD's usual 128


def schedule_free(steps_per_epoch, epochs):
    """Schedule-free SGD (Defazio et al., 2024); evaluated at its averaged weights."""
    return ScheduleFreeSGD(learning_rate=0.5, momentum=MOMENTUM,
                           warmup_steps=max(1, steps_per_epoch // 2))


def lookahead(steps_per_epoch, epochs):
    """Lookahead (k = 5, α = 0.5) around the "momentum" configuration."""
    return Lookahead(momentum(steps_per_epoch, epochs), sync_period=5, slow_step_size=0.5)


def momentum_swa(steps_per_epoch, epochs):
    """"momentum", its weights averaged over the last quarter of the epochs (stochastic weight
    averaging, Izmailov et al., 2018) at the unchanged rate."""
    return momentum(steps_per_epoch, epochs)


momentum_swa.callbacks = lambda steps_per_epoch, epochs, x_train: [
    StochasticWeightAveraging(start_epoch=epochs - max(1, epochs // 4))]


def sam(steps_per_epoch, epochs):
    """SAM (Foret et al., 2021; rho 0.05) around "nesterov": two passes per step."""
    return nesterov(steps_per_epoch, epochs)


sam.wrap_model = lambda model: SharpnessAwareMinimization(model, rho=0.05)


def asam(steps_per_epoch, epochs):
    """ASAM (Kwon et al., 2021; rho 0.5) around "nesterov": two passes per step."""
    return nesterov(steps_per_epoch, epochs)


asam.wrap_model = lambda model: SharpnessAwareMinimization(model, rho=0.5, adaptive=True)


CONFIGS = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "pytorch_dampening": pytorch_dampening,
    "adam": adam,
    "nesterov_warmup_cosine": nesterov_warmup_cosine,
    "one_cycle": one_cycle,
    "keras_sgd_momentum": keras_sgd_momentum,
    "qhm": qhm,
    "agg_mo": agg_mo,
    "lars": lars,
    "schedule_free": schedule_free,
    "lookahead": lookahead,
    "momentum_swa": momentum_swa,
    "sam": sam,
    "asam": asam,
}
FAMILY_CONFIGS = ("qhm", "agg_mo", "lars", "schedule_free", "lookahead")
TOOL_CONFIGS = ("momentum_swa", "sam", "asam")


def callbacks_for(make_optimizer, steps_per_epoch, epochs, x_train):
    """The configuration's own callbacks (SWA's), else none. `make_optimizer` is a factory of
    a configuration table; `x_train` is the training images (for batch-norm statistics)."""
    make = getattr(make_optimizer, "callbacks", None)
    return [] if make is None else make(steps_per_epoch, epochs, x_train)


def wrap_model_for(make_optimizer, model):
    """The configuration's model wrapper applied (SAM's), else `model` itself."""
    wrap = getattr(make_optimizer, "wrap_model", None)
    return model if wrap is None else wrap(model)


def batch_size_for(make_optimizer, default):
    """The configuration's own batch size (LARS's large batch), else `default`."""
    return getattr(make_optimizer, "batch_size", default)


# What `python -m benchmarks.mnist_mlp` runs with no arguments, which should end in about two
# minutes on 2 CPU cores: check the total it prints after adding one.
DEFAULT_CONFIGS = (
    "sgd", "momentum", "nesterov", "pytorch_dampening", "adam", "nesterov_warmup_cosine",
    "one_cycle",
)
QUICK_CONFIGS = ("sgd", "momentum")


def parse_config_names(text, table=CONFIGS):
    """Splits a comma-separated list of configuration names, checking each against `table`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"`optimizers` must name at least one configuration, got {text!r}")
    for name in names:
        if name not in table:
            raise ValueError(
                f"`optimizers` entries must be among {', '.join(table)}, got {name!r}"
            )
    return names
