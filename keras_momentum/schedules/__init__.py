"""Learning-rate and momentum schedules for Keras 3.

Every schedule is a `keras.optimizers.schedules.LearningRateSchedule`: pass it as
`learning_rate=` to any Keras optimizer, or as `momentum=` (or another hyperparameter) to the
optimizers of this package, which evaluate a schedule hyperparameter at `optimizer.iterations`.
Schedules are built from `keras.ops` only, so they run on every backend, inside `tf.function`
(also with `jit_compile=True`) and under `jax.jit`, and they serialise with the model.

Step convention
---------------
`schedule(t)` is the value used for optimizer update number `t`, counting from 0: Keras calls
the schedule with `optimizer.iterations`, which is 0 during the first update. This is the value
a torch scheduler gives after `t` calls of `scheduler.step()` when it is stepped once per batch
(torch schedulers start at `last_epoch = 0` after construction). The step may be a Python int
or float, a NumPy scalar, or a scalar tensor or variable of any int or float dtype; the result
is a float32 scalar, computed in float32 (steps stay exact up to 2**24, about 16.7 million
updates). A step with a known non-scalar shape raises `ValueError`.

Deliberate differences from torch (all documented on the class): `CosineDecay` stays at its
minimum after `decay_steps` (torch's `CosineAnnealingLR` climbs back up), `OneCycle` holds its
final value after `total_steps` (torch raises), `ExponentialDecay` uses a rate per `decay_steps`
(torch's `ExponentialLR(gamma)` is `decay_rate=gamma, decay_steps=1`), and `CosineRestarts`
accepts a float `t_mul` and an `m_mul` height factor.

Composing
---------
`Warmup(schedule, warmup_steps)` ramps up to `schedule(0)` and then runs `schedule` offset by
`warmup_steps`; `Sequential(schedules, boundaries)` runs parts one after another, each counting
from its own start. Both accept plain floats as constant parts.

Durations in epochs
-------------------
Schedules count optimizer steps (batches). `epochs(n, steps_per_epoch)` converts:

```python
spe = len(train_dataset)
StepDecay(0.1, step_size=epochs(30, spe))                     # x0.1 every 30 epochs
MultiStepDecay(0.1, milestones=epochs([30, 60, 80], spe))
```

A step-wise schedule then changes every batch instead of once per epoch; for the staircase
schedules (`StepDecay`, `MultiStepDecay`) the values are identical to stepping per epoch.

`plot(schedules, steps)` draws one or several schedules with matplotlib.
"""

from keras_momentum.schedules.cosine_decay import CosineDecay
from keras_momentum.schedules.cosine_restarts import CosineRestarts
from keras_momentum.schedules.cyclical import Cyclical
from keras_momentum.schedules.demon_momentum import DemonMomentum
from keras_momentum.schedules.epoch_conversion import epochs
from keras_momentum.schedules.exponential_decay import ExponentialDecay
from keras_momentum.schedules.inverse_sqrt import InverseSqrt
from keras_momentum.schedules.linear import Linear
from keras_momentum.schedules.multi_step_decay import MultiStepDecay
from keras_momentum.schedules.one_cycle import OneCycle
from keras_momentum.schedules.one_cycle_momentum import OneCycleMomentum
from keras_momentum.schedules.plotting import plot
from keras_momentum.schedules.sequential import Sequential
from keras_momentum.schedules.step_decay import StepDecay
from keras_momentum.schedules.warmup import Warmup
from keras_momentum.schedules.warmup_stable_decay import WarmupStableDecay

__all__ = [
    "CosineDecay",
    "CosineRestarts",
    "Cyclical",
    "DemonMomentum",
    "ExponentialDecay",
    "InverseSqrt",
    "Linear",
    "MultiStepDecay",
    "OneCycle",
    "OneCycleMomentum",
    "Sequential",
    "StepDecay",
    "Warmup",
    "WarmupStableDecay",
    "epochs",
    "plot",
]
