"""Aliasing spectrum of a nonlinearity: how much of its output energy lies above the band of
the grid it is sampled on, measured by evaluating it on a finer grid.

The input map is ideally upsampled by F (so it is the same band-limited signal, sampled more
densely), the nonlinearity is applied there, and the 2D power spectrum of the result is split:

- `above_band`: the fraction of the (non-DC) output energy above the Nyquist frequency of the
  sampling grid (|k| > S/2 on either axis for an S-point grid): everything that folds back.
- `aliased_into_kept_band`: the part of it that folds into the band the next layers keep
  (AFC's MLP low-pass keeps half the 2x grid's band, the stem's low-pass a quarter), i.e. the
  aliasing that survives into the features.

F is finite, so whatever the nonlinearity puts above the fine grid's own Nyquist frequency (GELU
has no band limit) is not seen; F = 4 (the default) sees up to twice the band that even AFC's 2x
grid can hold.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from afc_jax.analysis.probes import Nonlinearity
from afc_jax.ops.filters import ideal_upsample


@dataclasses.dataclass
class Spectrum:
    """Power spectra of one nonlinearity's input and output on the fine grid.

    Arrays are (M_h, M_w), mean power over channels and examples, zero frequency at [0, 0]
    (numpy FFT order); `fine` is M / (layer grid size) and `sample` the size of the grid the
    output is sampled on, in layer-grid units (1 or 2).
    """

    before: np.ndarray
    after: np.ndarray
    fine: int
    sample: int
    keep: float


def _power(x: jax.Array) -> np.ndarray:
    """(N, H, W, C) -> (H, W) mean |DFT|^2 over examples and channels (float64)."""
    spec = np.fft.fft2(np.asarray(x, np.float64), axes=(1, 2))
    return np.mean(np.abs(spec) ** 2, axis=(0, 3))


def spectrum(
    nl: Nonlinearity, oversample: int = 4, max_channels: int | None = 64, examples: int = 1
) -> Spectrum:
    """Power spectra before/after `nl` on a grid `oversample` times finer than the layer's
    (at least 2x the grid the network evaluates it on, so something lies above its Nyquist
    frequency). At most `max_channels` channels (evenly spaced) of the first `examples`
    examples are kept, to bound memory and time; pointwise nonlinearities see only those."""
    x = jnp.asarray(nl.input[:examples], jnp.float32)
    e = nl.eval_factor
    fine = max(-(-oversample // e) * e, 2 * e)
    idx = None
    if max_channels is not None and x.shape[-1] > max_channels:
        idx = np.linspace(0, x.shape[-1] - 1, max_channels).round().astype(int)
    if nl.pointwise and idx is not None:
        x = x[..., idx]
        up = ideal_upsample(x, fine)
        y = nl.make_fn(fine, idx)(up)
    else:
        up = ideal_upsample(x, fine)
        y = nl.make_fn(fine, None)(up)
        if idx is not None:
            up, y = up[..., idx], y[..., idx]
    return Spectrum(_power(up), _power(y), fine, e, nl.keep)


def _signed_bins(m: int) -> np.ndarray:
    return np.fft.fftfreq(m, 1.0 / m).round().astype(int)


def band_fractions(s: Spectrum) -> dict[str, float]:
    """`above_band` and `aliased_into_kept_band` fractions of `s.after` (module docstring)."""
    mh, mw = s.after.shape
    sh, sw = mh // s.fine * s.sample, mw // s.fine * s.sample  # sample grid sizes
    ky, kx = np.meshgrid(_signed_bins(mh), _signed_bins(mw), indexing="ij")

    def fold(k, n):
        return (k + n // 2) % n - n // 2

    above = (2 * np.abs(ky) > sh) | (2 * np.abs(kx) > sw)
    kept = (2 * np.abs(fold(ky, sh)) < s.keep * sh) & (2 * np.abs(fold(kx, sw)) < s.keep * sw)
    power = s.after.copy()
    power[0, 0] = 0.0  # the constant is no signal for aliasing
    total = float(power.sum())
    if total == 0.0:
        return {"above_band": 0.0, "aliased_into_kept_band": 0.0}
    return {
        "above_band": float(power[above].sum() / total),
        "aliased_into_kept_band": float(power[above & kept].sum() / total),
    }
