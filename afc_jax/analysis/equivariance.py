"""Per-layer equivariance error under integer and fractional circular shifts.

For a layer at stride s (relative to the input image), shifting the input by d pixels should
shift the layer's output by d/s of its own pixels. The error compares the layer's output for the
shifted image with the (Fourier, `afc_jax.ops.fractional_shift`) shift of its output for the
original image: max |f(shift(x, d)) - shift(f(x), d/s)| / max |f(x)|, within the band the next
layers keep (`Layer.keep`: only the AFC stem polynomial's output is low-passed before the
comparison, since the stem's ideal filter removes the rest). The logits should not move at all.
For an alias-free layer this is float32 round-off at every d; wherever a layer aliases, its
output is no longer a band-limited function of a shifted image and the error jumps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.analysis.probes import Layer, layers_of, probe
from afc_jax.ops.filters import fractional_shift, ideal_lowpass

# (name, (dy, dx)) in input pixels.
DEFAULT_SHIFTS = (("integer", (1.0, 1.0)), ("half_pixel", (0.5, 0.5)))


def relative_error(got: jax.Array, want: jax.Array, ref: jax.Array) -> float:
    """max |got - want| / max |ref| in float64 (0 when ref is all zeros and got == want)."""
    got, want, ref = (np.asarray(a, np.float64) for a in (got, want, ref))
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(got - want)))
    return diff / scale if scale > 0 else diff


def shifted_inputs(images: jax.Array, shifts: Sequence) -> jax.Array:
    """(N, H, W, C) -> ((1 + len(shifts)) N, H, W, C): the images, then each shift of them."""
    parts = [images] + [fractional_shift(images, d) for _, d in shifts]
    return jnp.concatenate(parts, axis=0)


def layer_errors(
    maps: Mapping[str, jax.Array], layers: Sequence[Layer], shifts: Sequence, batch: int
) -> dict[str, dict[str, float]]:
    """Errors of every layer from maps of `shifted_inputs` (see the module docstring).

    Returns: layer name -> {shift name: relative error}.
    """
    out = {}
    for layer in layers:
        m = maps[layer.name]
        ref = m[:batch]
        errors = {}
        for k, (shift_name, d) in enumerate(shifts, start=1):
            got = m[k * batch : (k + 1) * batch]
            if layer.name == "logits":
                want = ref
            else:
                want = fractional_shift(ref.astype(jnp.float32), tuple(v / layer.stride for v in d))
            if layer.keep < 1.0:
                got, want = (ideal_lowpass(a, layer.keep) for a in (got, want))
            errors[shift_name] = relative_error(got, want, ref)
        out[layer.name] = errors
    return out


def equivariance_report(
    model, variables, images: jax.Array, shifts: Sequence = DEFAULT_SHIFTS
) -> dict[str, dict[str, float]]:
    """Per-layer equivariance errors of `model` on NHWC `images` (one jitted forward pass).

    Shifts are (name, (dy, dx)) in input pixels; integer ones are exact rolls.
    """
    batch = images.shape[0]
    x = shifted_inputs(jnp.asarray(images, jnp.float32), shifts)
    maps, _ = jax.jit(lambda v, x: probe(model, v, x))(variables, x)
    return layer_errors(maps, layers_of(model), shifts, batch)
