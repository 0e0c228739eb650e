"""The aliasing microscope: where does a network alias?

    python -m afc_jax.analysis --config configs/imagenet.py:model=convnext_afc_tiny \
        --workdir runs/microscope                                  # random weights, 224x224
    python -m afc_jax.analysis --config configs/digits.py --checkpoint runs/digits/convnext_afc \
        --checkpoint runs/digits/convnext_baseline_circular --images=eval --workdir OUT
    python -m afc_jax.analysis --config configs/digits.py \
        --models=convnext_afc,convnext_ideal_lpf_afln,convnext_baseline_circular --workdir OUT

Per layer (stem, every block's norm / activation / MLP output / output, every downsampling,
logits): the equivariance error under an integer (1, 1) and a half-pixel (0.5, 0.5) shift, and
for each nonlinearity the fraction of its output energy above the Nyquist frequency of the grid
it is sampled on (evaluated on a finer grid with ideal filters). Writes OUT/microscope.json,
OUT/microscope.md, OUT/layer_errors_{integer,half_pixel}.png (every model on one log-scale
chart) and OUT/spectrum_<model>_<layer>.png (power before/after the nonlinearity).

Without --checkpoint the config's model (or each of --models) gets random weights
(--random_init=fanin: kernels N(0, 1/fan_in) and gammas 1, so the nonlinearities act; or the
model's own init).
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "training config file: model, image size, classes", lock_config=True
)
_CHECKPOINTS = flags.DEFINE_multi_string(
    "checkpoint", None, "[label=]path of a training run, variables checkpoint or .pth; repeat"
)
_MODELS = flags.DEFINE_list(
    "models", None, "without --checkpoint: families/names to examine instead of config.model"
)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (local or gs://)")
_WEIGHTS = flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "training checkpoints: which")
_IMAGES = flags.DEFINE_enum(
    "images", "noise", ["noise", "eval"], "inputs: N(0,1) images or the config's eval split"
)
_BATCH = flags.DEFINE_integer("batch", 2, "number of images")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "default: config.data.image_size")
_RANDOM_INIT = flags.DEFINE_enum("random_init", "fanin", ["fanin", "init"], "see above")
_SEED = flags.DEFINE_integer("seed", 0, "random weights and noise images")
_OVERSAMPLE = flags.DEFINE_integer(
    "oversample", 4, "aliasing spectrum: fine grid / the grid the nonlinearity is evaluated on"
)
_MAX_CHANNELS = flags.DEFINE_integer("max_channels", 64, "aliasing spectrum: channels kept")
_SPECTRA = flags.DEFINE_list(
    "spectrum_layers", ["stem.poly", "stem", "s0.b0.norm", "s0.b0.act"], "layers to plot"
)
flags.mark_flags_as_required(["config", "workdir"])


def _images(config, batch: int, size: int, seed: int):
    import numpy as np

    if _IMAGES.value == "noise":
        return np.random.default_rng(seed).standard_normal((batch, size, size, 3), np.float32)
    from afc_jax import data

    with config.unlocked():
        config.eval_batch_size = batch
        config.data.image_size = size
    first = next(iter(data.create_eval_iterator(config)))
    return first["image"][:batch]


def _models(config, num_classes: int):
    """(label, model, variables) of every checkpoint, or of randomly initialised models."""
    from afc_jax.analysis.weights import random_variables
    from afc_jax.evaluation.loading import load_checkpoint
    from afc_jax.models import from_config

    if _CHECKPOINTS.value:
        for spec in _CHECKPOINTS.value:
            ck = load_checkpoint(spec, config, num_classes, weights=_WEIGHTS.value)
            yield ck.name, ck.model, ck.variables
        return
    for name in _MODELS.value or [config.model.name]:
        with config.unlocked():
            config.model.name = name
        model = from_config(config.model, num_classes)
        yield name, model, random_variables(model, _SEED.value, _RANDOM_INIT.value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from afc_jax.analysis.microscope import examine
    from afc_jax.analysis.report import markdown, write_all

    config = _CONFIG.value
    size = _IMAGE_SIZE.value or int(config.data.image_size)
    images = _images(config, _BATCH.value, size, _SEED.value)
    reports, spectra = [], {}
    for label, model, variables in _models(config, int(config.data.num_classes)):
        t0 = time.time()
        report, kept = examine(
            model,
            variables,
            images,
            oversample=_OVERSAMPLE.value,
            max_channels=_MAX_CHANNELS.value,
            keep_spectra=_SPECTRA.value,
        )
        report["label"] = label
        report["seconds"] = round(time.time() - t0, 1)
        reports.append(report)
        spectra.update({(label, layer): s for layer, s in kept.items()})
        w = report["worst"]
        print(
            f"{label}: worst layer {w['half_pixel']['layer']} ({w['half_pixel']['error']:.1e} "
            f"half-pixel), logits {report['logits']['half_pixel']:.1e} "
            f"[{report['seconds']:.0f}s]",
            flush=True,
        )
    files = write_all(reports, spectra, _WORKDIR.value)
    print(markdown(reports).split("\n## ")[0])
    print("wrote " + ", ".join(sorted(set(files.values()))))
    logging.info("done")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
