"""Schedule-free SGD: momentum as interpolation, with an online average for evaluation."""

import contextlib

import keras
from keras import ops

from keras_momentum.optimizers import _hyperparameters as hp
from keras_momentum.optimizers._dense import dense_gradient
from keras_momentum.optimizers.base import MomentumOptimizer


@keras.saving.register_keras_serializable(package="keras_momentum")
class ScheduleFreeSGD(MomentumOptimizer):
    """Schedule-free SGD: no decay schedule needed; evaluate at a weighted average.

    Three sequences start at the initial weights, `x_0 = y_0 = z_0 = θ_0`. With
    momentum `β`, base learning rate `η_t` (a float, schedule or callable, times the
    learning-rate multiplier) and the gradient `g_t` taken at `y_t`, update `t`
    (counting from 0) computes

        γ_t = η_t·min(1, (t + 1)/warmup_steps)        (γ_t = η_t without warmup)
        w_t = (t + 1)^r · (max_{i≤t} γ_i)^p           (p = weight_lr_power)
        c_{t+1} = w_t / Σ_{i≤t} w_i                   (0 while the sum is 0)
        z_{t+1} = z_t − γ_t·g_t
        x_{t+1} = (1 − c_{t+1})·x_t + c_{t+1}·z_{t+1}
        y_{t+1} = (1 − β)·z_{t+1} + β·x_{t+1}

    `z` is the plain SGD sequence, `x` a weighted running average of it (the
    weights to evaluate and ship), `y` the interpolation at which gradients are taken.
    During training the model's weights hold `y`; the optimizer stores `z` and
    recovers `x = (y − (1 − β)·z)/β` on demand. Substituting the rules above gives the
    in-place update actually run, `y ← (1 − c)·y + c·z + γ·(β·(1 − c) − 1)·g` followed
    by `z ← z − γ·g`. Both `z` and the scalars `max γ` and `Σ w` are optimizer state.

    Evaluating `y` gives worse numbers than `x`. Swap the weights explicitly:

    * `optimizer.swap_to_evaluation()` / `optimizer.swap_to_training()` replace the
      weights by `x` / `y` in place (each a no-op when already done, both a no-op
      before the first update, when `x = y`); `in_evaluation_mode` tells which is held,
      and is saved with the optimizer;
    * `with optimizer.evaluation_weights(): model.evaluate(...)` swaps for a block;
    * `keras_momentum.callbacks.ScheduleFreeEvaluation()` in `fit` swaps around
      validation, `evaluate` and `predict`, and leaves `x` in the model at the end of
      training, so `model.save` afterwards stores `x`; its `on_train_begin` swaps `y`
      back, so give it to every `fit` call (or call `swap_to_training()` first).

    Checkpoints written during training (`ModelCheckpoint`) hold `y` and the optimizer
    state, which is what resuming needs; load one and call `swap_to_evaluation()` to
    get `x`. Each swap rounds in float32, so a swap and its inverse may change the
    weights in the last bits.

    The warmup, `r` and the weighting by the largest rate so far follow the authors'
    reference implementation (facebookresearch/schedule_free) and
    `pytorch_optimizer.ScheduleFreeSGD`; the paper weights by `γ_t^2`, the same as
    `p = 2` while the rate never decreases. Weight decay `λ` is added to the gradient
    at `y` (`g ← g + λ·y`), as in the reference. Sparse `IndexedSlices` gradients are
    densified.

    Args:
        learning_rate: `η`, float >= 0, a `LearningRateSchedule`, or a zero-argument
            callable. Defaults to 1.0, the reference's default; schedule-free SGD is
            meant to run at a constant rate after warmup.
        momentum: `β`, float in (0, 1), not a schedule (`x` is recovered from `y` and
            `z` with the current `β`). Defaults to 0.9.
        warmup_steps: int >= 0, length of the linear warmup of `γ`. Defaults to 0.
        r: float >= 0, polynomial weighting of later iterates in `x`. Defaults to 0.
        weight_lr_power: float >= 0, `p` above. Defaults to 2.0.
        weight_decay: None, a float >= 0 or a schedule, coupled as above.
        skip_nonfinite: skip updates whose gradients are not finite. Defaults to False.
        **kwargs: Keras's optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `loss_scale_factor`, `gradient_accumulation_steps`,
            `name`; `use_ema` works but averages `y`).

    Reference:
        Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
        NeurIPS 2024 (arXiv:2405.15682).
    """

    fixed_weight_decay_mode = ("coupled", "its weight decay is always added to the gradient")

    def __init__(
        self,
        learning_rate=1.0,
        momentum=0.9,
        warmup_steps=0,
        r=0.0,
        weight_lr_power=2.0,
        weight_decay=None,
        **kwargs,
    ):
        momentum = hp.check_number("momentum", momentum, 0.0, 1.0, low_open=True, high_open=True)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0, got {warmup_steps!r}")
        r = hp.check_number("r", r, low=0.0)
        weight_lr_power = hp.check_number("weight_lr_power", weight_lr_power, low=0.0)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            **kwargs,
        )
        self.momentum = momentum
        self.warmup_steps = warmup_steps
        self.r = r
        self.weight_lr_power = weight_lr_power
        with keras.name_scope(self.name, caller=self):
            self._evaluation_mode = keras.Variable(
                0, name="evaluation_mode", dtype="int32", trainable=False,
                aggregation="only_first_replica",
            )

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.z = self.add_optimizer_variables(variables, "z")
        self.max_learning_rate = self._scalar_variable("max_learning_rate")
        self.weight_sum = self._scalar_variable("weight_sum")

    def _scalar_variable(self, name):
        return self.add_variable(
            (), dtype="float32", aggregation="only_first_replica", name=name
        )

    def _step_hyperparameters(self, learning_rate):
        # Called once per update, before `update_step` runs for each variable.
        hyper = super()._step_hyperparameters(learning_rate)
        count = ops.cast(self.iterations + 1, "float32")
        rate = ops.cast(hyper["learning_rate"], "float32")
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, count / self.warmup_steps)
        max_rate = ops.maximum(self.max_learning_rate, rate)
        weight = ops.power(count, self.r) * ops.power(max_rate, self.weight_lr_power)
        weight_sum = self.weight_sum + weight
        self.max_learning_rate.assign(max_rate)
        self.weight_sum.assign(weight_sum)
        hyper["learning_rate"] = rate
        hyper["average_weight"] = ops.divide_no_nan(weight, weight_sum)
        return hyper

    def update_step(self, gradient, variable, hyper):
        gradient = dense_gradient(gradient, variable.dtype)
        gradient = self._coupled_gradient(gradient, variable, hyper)
        z = self.z[self._get_variable_index(variable)]
        # z_0 = θ_0, taken at the first update so that weights set after `build` count.
        y = ops.convert_to_tensor(variable)
        z_value = ops.where(ops.equal(self.iterations, 0), y, ops.convert_to_tensor(z))
        rate = ops.cast(hyper["learning_rate"], variable.dtype)
        weight = ops.cast(hyper["average_weight"], variable.dtype)
        gradient_scale = rate * (self.momentum * (1.0 - weight) - 1.0)
        new_y = y + weight * (z_value - y) + gradient_scale * gradient
        self.assign(variable, new_y)
        self.assign(z, z_value - rate * gradient)

    # ------------------------------------------------------------ evaluation
    @property
    def in_evaluation_mode(self):
        """Whether the weights hold the average `x` (True) or the training point `y`."""
        return bool(ops.convert_to_numpy(self._evaluation_mode))

    def swap_to_evaluation(self):
        """Replaces `y` by `x` in the weights; returns whether anything was swapped."""
        if self.in_evaluation_mode:
            return False
        self._swap(lambda y, z: (y - (1.0 - self.momentum) * z) / self.momentum)
        self._evaluation_mode.assign(1)
        return True

    def swap_to_training(self):
        """Replaces `x` by `y` in the weights; returns whether anything was swapped."""
        if not self.in_evaluation_mode:
            return False
        self._swap(lambda x, z: (1.0 - self.momentum) * z + self.momentum * x)
        self._evaluation_mode.assign(0)
        return True

    @contextlib.contextmanager
    def evaluation_weights(self):
        """Context manager: the weights hold `x` inside the block, as before after it."""
        swapped = self.swap_to_evaluation()
        try:
            yield self
        finally:
            if swapped:
                self.swap_to_training()

    def _swap(self, convert):
        if not self.built or int(ops.convert_to_numpy(self.iterations)) == 0:
            return
        for variable, z in zip(self._trainable_variables, self.z):
            if z is not None:
                variable.assign(ops.cast(convert(variable.value, z.value), variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "warmup_steps": self.warmup_steps,
                "r": self.r,
                "weight_lr_power": self.weight_lr_power,
            }
        )
        return config
