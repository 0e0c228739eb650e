"""The aliasing microscope: where a network aliases, layer by layer.

```python
from afc_jax.analysis import examine
report, spectra = examine(model, variables, images)    # images NHWC
report["layers"]  # [{"name", "stride", "errors": {"integer", "half_pixel"}, ...}]
```

`python -m afc_jax.analysis --config ... [--checkpoint ...] --workdir OUT` writes the JSON,
markdown and plots (see `afc_jax/analysis/__main__.py`).
"""

from afc_jax.analysis.equivariance import DEFAULT_SHIFTS, equivariance_report, layer_errors
from afc_jax.analysis.microscope import examine, first_aliasing_layer
from afc_jax.analysis.probes import Layer, Nonlinearity, layers_of, nonlinearities, probe
from afc_jax.analysis.spectrum import Spectrum, band_fractions, spectrum
from afc_jax.analysis.weights import random_variables

__all__ = [
    "DEFAULT_SHIFTS",
    "Layer",
    "Nonlinearity",
    "Spectrum",
    "band_fractions",
    "equivariance_report",
    "examine",
    "first_aliasing_layer",
    "layer_errors",
    "layers_of",
    "nonlinearities",
    "probe",
    "random_variables",
    "spectrum",
]
