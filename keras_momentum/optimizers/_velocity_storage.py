"""How velocities are stored: the weight's dtype, float32, bfloat16, or block-wise int8.

The update arithmetic is float32 whatever the storage (float64 for float64 weights): a
velocity is read into a float32 tensor, updated, and written back rounded to its storage.

`velocity_dtype=None` keeps Keras's rule, one slot of the weight's dtype (float32 also
under mixed precision, whose weights are float32).

`"bfloat16"` keeps float32's exponent range and 8 significant bits. Writes round to
nearest, ties to even (what every backend's cast does): the stored value is within half
a bfloat16 ulp, a relative 2⁻⁹ to 2⁻⁸, of the float32 result. A write whose change to
the stored value is smaller than that is rounded away entirely. In `v ← μ·v + g` the
change is `(μ − 1)·v + g`: with μ = 0.9 the decay alone moves `v` by 10 % and the
rounding acts as small, roughly unbiased noise; with `1 − μ` below about 2⁻⁸ (μ ≳ 0.996,
e.g. QHM's default β = 0.999) the decay itself can be rounded away, and so can any
gradient below 2⁻⁹·|v|, so the stored velocity stops following its float32 value.
Stochastic rounding (round up with probability equal to the remainder) keeps such
changes on average, since the expected stored value is the float32 one; it would matter
in that regime, and for long runs of small gradients against a large velocity.

`"int8"` quantises each velocity block-wise: the flattened velocity is cut into blocks of
`BLOCK_SIZE` = 256 consecutive values (the last block zero-padded), and block `b` keeps
one float32 scale and one int8 code per value:

    s_b = max_{i ∈ b} |v_i| · (1/127)              (1/127 rounded to float32)
    q_i = clip(round(v_i / s_b), −127, 127)       (q_i = 0 when s_b = 0)
    v̂_i = q_i · s_b

with `round` to nearest, ties to even. This is the block-wise absmax normalisation of
Dettmers et al. with a linear code (they use a non-linear "dynamic tree" code and blocks
of 2048): every value is kept to within `s_b / 2`, the block's largest value nearly
exactly, and values smaller than `s_b / 2` (1/254 of the block's largest) become zero.
The code −128 is unused, so the map is symmetric. A non-finite velocity makes its
block's codes meaningless (see `skip_nonfinite`). Storage: 1 byte a value plus 4 bytes
per 256 values.

Reference:
    Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
    Quantization", ICLR 2022.
"""

import contextlib
import math

from keras import ops

VELOCITY_DTYPES = ("float32", "bfloat16", "int8")
BLOCK_SIZE = 256
INT8_LEVELS = 127


def check_velocity_dtype(velocity_dtype):
    if velocity_dtype is not None and velocity_dtype not in VELOCITY_DTYPES:
        choices = ", ".join(repr(d) for d in (None,) + VELOCITY_DTYPES)
        raise ValueError(f"`velocity_dtype` must be one of {choices}, got {velocity_dtype!r}")
    return velocity_dtype


def compute_dtype(variable):
    """The dtype of the update arithmetic when the velocity has its own storage."""
    return "float64" if variable.dtype == "float64" else "float32"


def add_velocities(optimizer, variables, name, velocity_dtype):
    """`(velocities, scales)`: one slot per variable (None where Keras keeps none) and, for
    int8, its block scales (else None), both aligned with `variables`. With a list of
    names, a list of such lists for each, created interleaved as Keras creates them."""
    names = [name] if isinstance(name, str) else list(name)
    if velocity_dtype is None:
        velocities = optimizer.add_optimizer_variables(variables, names)
        scales = [[None] * len(variables) for _ in names]
    else:
        velocities, scales = [[] for _ in names], [[] for _ in names]
        for variable in variables:
            for slot_name, slots, slot_scales in zip(names, velocities, scales):
                slot, scale = None, None
                if not optimizer._overwrite_variable_with_gradient(variable):
                    slot = _add_slot(optimizer, variable, slot_name, variable.shape,
                                     velocity_dtype, getattr(variable, "_layout", None))
                    if velocity_dtype == "int8":
                        blocks = math.ceil(math.prod(variable.shape) / BLOCK_SIZE)
                        scale = _add_slot(optimizer, variable, f"{slot_name}_scale",
                                          (blocks,), "float32")
                slots.append(slot)
                slot_scales.append(scale)
    if isinstance(name, str):
        return velocities[0], scales[0]
    return list(velocities), scales


def _add_slot(optimizer, reference, name, shape, dtype, layout=None):
    # Named as `add_variable_from_reference` names slots, and placed beside the weight
    # under a tf.distribute strategy as it places them.
    path = getattr(reference, "path", reference.name).replace("/", "_")
    with _colocated(optimizer, reference):
        return optimizer.add_variable(
            shape, dtype=dtype, name=f"{path}_{name}", layout=layout
        )


def _colocated(optimizer, reference):
    strategy = getattr(optimizer, "_distribution_strategy", None)
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.extended.colocate_vars_with(reference.value)


def read(velocity, scale, dtype):
    """The stored velocity as a `dtype` tensor."""
    if scale is None:
        return ops.cast(velocity, dtype)
    return ops.cast(dequantize(velocity, scale), dtype)


def write(optimizer, velocity, scale, value):
    """Stores `value` (float) in `velocity`, rounded or quantised to its storage."""
    if scale is None:
        optimizer.assign(velocity, ops.cast(value, velocity.dtype))
        return
    codes, scales = quantize(ops.cast(value, "float32"))
    optimizer.assign(velocity, codes)
    optimizer.assign(scale, scales)


def _blocks(values):
    """`values` flattened, zero-padded to whole blocks, as `(blocks, BLOCK_SIZE)`."""
    flat = ops.reshape(values, (-1,))
    size = flat.shape[0]
    padding = -size % BLOCK_SIZE
    if padding:
        flat = ops.pad(flat, [[0, padding]])
    return ops.reshape(flat, (-1, BLOCK_SIZE))


def quantize(values):
    """`(codes, scales)`: int8 codes of `values`' shape and one float32 scale per block."""
    shape = values.shape
    size = math.prod(shape)
    blocks = _blocks(values)
    # A product, not a quotient: XLA turns division by a constant into multiplication by
    # its reciprocal, so the quotient would differ by an ulp between backends.
    scales = ops.multiply(ops.max(ops.abs(blocks), axis=1), 1.0 / INT8_LEVELS)
    nonzero = ops.greater(scales, 0.0)
    divisor = ops.where(nonzero, scales, ops.ones_like(scales))
    codes = ops.round(ops.divide(blocks, ops.expand_dims(divisor, 1)))
    codes = ops.clip(codes, -float(INT8_LEVELS), float(INT8_LEVELS))
    codes = ops.reshape(ops.cast(codes, "int8"), (-1,))[:size]
    return ops.reshape(codes, shape), scales


def dequantize(codes, scales):
    """The float32 values of int8 `codes` with block `scales` (see the module docstring)."""
    shape = codes.shape
    size = math.prod(shape)
    blocks = _blocks(ops.cast(codes, "float32"))
    values = ops.multiply(blocks, ops.expand_dims(ops.cast(scales, "float32"), 1))
    return ops.reshape(ops.reshape(values, (-1,))[:size], shape)
