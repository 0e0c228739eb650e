"""Block MLPs of the ablation ladder (spec §11): AFC's pieces taken apart.

- `PolynomialMLP`: AFC's per-channel polynomial at the input resolution (no 2x grid), so the
  frequencies it doubles fold back (`convnext_afc_poly1x`).
- `UpsampledGeluMLP`: GELU evaluated on the 2x grid between ideal up- and down-sampling (the
  alias-free GAN treatment, `convnext_afc_upgelu`). GELU is not band-limited, so this reduces
  aliasing without removing it.

Both have the parameters of the MLP they vary (`pwconv1`, [`act`], `pwconv2`), so official state
dicts load through the same key table.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from afc_jax.layers.activations import PolynomialActivation, gelu_exact
from afc_jax.layers.mlp import _PointwiseMLP
from afc_jax.ops.resampling import on_fine_grid


class PolynomialMLP(_PointwiseMLP):
    """`pwconv2(poly(pwconv1(x)))` at the input resolution; `poly` is `PolynomialActivation`.

    Params: `pwconv1`, `act` (coef (4C, 3), in_scale, out_scale), `pwconv2`.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (..., C) -> (..., C)."""
        c = x.shape[-1]
        x = self._dense(self.expansion * c, "pwconv1")(x)
        x = PolynomialActivation(dtype=self.dtype, param_dtype=self.param_dtype, name="act")(x)
        return self._dense(c, "pwconv2")(x)


class UpsampledGeluMLP(_PointwiseMLP):
    """`pwconv2(down2(gelu(up2(pwconv1(x)))))` with ideal up/down-sampling by 2.

    The pointwise layers commute with ideal resampling (they act on channels and the filters
    keep constants), so they run at 1x; only GELU sees the 2x grid. Params as `GeluMLP`.
    """

    filter_rule: str = "strict"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        c = x.shape[-1]
        x = self._dense(self.expansion * c, "pwconv1")(x)
        x = on_fine_grid(x, gelu_exact, 2, rule=self.filter_rule)
        return self._dense(c, "pwconv2")(x)
