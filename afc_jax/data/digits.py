"""`afc_digits`: scikit-learn's bundled 8x8 digits as a band-limited TFDS dataset.

The 1797 images of `sklearn.datasets.load_digits()` are split deterministically (stratified by
class, 80/20, `random_state=0`) into train (1437 examples) and test (360 examples). Pixels are
scaled from 0..16 to [0, 1], upsampled 8x8 -> (8 f) x (8 f) with the IDEAL (Fourier zero-padding)
upsampler `afc_jax.ops.ideal_upsample` (the 8x8 samples are kept exactly, at every f-th pixel),
and replicated to 3 channels. Every image is band-limited: its DFT is zero outside |k| <= 4 on
each axis (a quarter of the band for f = 4, the default, 32x32). The digits have energy at their
own Nyquist bin |k| = 4, which `ideal_lowpass(x, 1/f)` (strict rule, keeps |k| < 4) removes, so
`ideal_downsample(image, f)` differs from the 8x8 digit by that component. They are stored as
float32 tensors, not clipped: the band-limited interpolant rings outside [0, 1] (over all 1797
images the values span about -0.55..1.37; 2.5% of pixels are below -0.1, 0.8% above 1.1).

Features: "image" float32 (S, S, 3), "label" (10 classes), "index" (the row in `load_digits()`).
Nothing is downloaded; `prepare_digits(data_dir)` builds it in a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

NUM_CLASSES = 10
SOURCE_SIZE = 8
SPLIT_SEED = 0
TEST_FRACTION = 0.2
NUM_TRAIN = 1437
NUM_TEST = 360
DEFAULT_UPSAMPLE = 4

_log = logging.getLogger(__name__)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices into `load_digits()`: stratified 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(
        np.arange(len(target)),
        test_size=TEST_FRACTION,
        stratify=target,
        random_state=SPLIT_SEED,
        shuffle=True,
    )
    return np.sort(train), np.sort(test)


def upsampled_digits(upsample: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 (N, 8 f, 8 f, 3) ideal-upsampled images, and their labels."""
    import jax
    import jax.numpy as jnp
    from sklearn.datasets import load_digits

    from afc_jax.ops import ideal_upsample

    d = load_digits()
    small = (d.images.astype(np.float32) / 16.0)[..., None]  # (N, 8, 8, 1) in [0, 1]
    # A local device: in a multi-process run jax.devices()[0] belongs to process 0.
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        big = np.asarray(ideal_upsample(jnp.asarray(small), upsample), dtype=np.float32)
    return np.repeat(big, 3, axis=-1), d.target.astype(np.int64)


@dataclasses.dataclass
class AfcDigitsConfig(tfds.core.BuilderConfig):
    """`upsample`: integer factor f; images are (8 f) x (8 f)."""

    upsample: int = DEFAULT_UPSAMPLE


def config_name(upsample: int) -> str:
    return f"up{int(upsample)}"


class AfcDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits, ideal-upsampled (band-limited) to 3-channel float32 images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/20 split (seed 0), ideal upsampling."}
    BUILDER_CONFIGS = [
        AfcDigitsConfig(
            name=config_name(f),
            description=f"{8 * f}x{8 * f} images (ideal upsampling by {f})",
            upsample=f,
        )
        for f in (1, 2, 4, 8)
    ]
    DEFAULT_CONFIG_NAME = config_name(DEFAULT_UPSAMPLE)
    # TFDS 4.9.x derives this from the module through `importlib_resources`, which it only
    # declares as a dependency for Python < 3.9; giving it directly avoids that import.
    code_path = epath.Path(__file__)

    @property
    def image_size(self) -> int:
        return SOURCE_SIZE * int(self.builder_config.upsample)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.image_size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(s, s, 3), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = upsampled_digits(int(self.builder_config.upsample))
        train, test = digits_split_indices()
        return {
            "train": self._generate_examples(images, labels, train),
            "test": self._generate_examples(images, labels, test),
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i]), "index": int(i)}


def digits_builder(data_dir: str | None = None, upsample: int = DEFAULT_UPSAMPLE) -> AfcDigits:
    """The builder for factor `upsample` (any positive integer) in `data_dir` (TFDS default
    when None); does not build."""
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"digits upsampling factor must be a positive integer, got {upsample!r}")
    name = config_name(upsample)
    known = {c.name for c in AfcDigits.BUILDER_CONFIGS}
    if name in known:
        return AfcDigits(data_dir=data_dir, config=name)
    config = AfcDigitsConfig(name=name, upsample=int(upsample))
    return AfcDigits(data_dir=data_dir, config=config)


def prepare_digits(data_dir: str | None = None, upsample: int = DEFAULT_UPSAMPLE) -> AfcDigits:
    """`digits_builder(...)`, built into data_dir first when it is not there yet.

    Safe when several processes share data_dir (a multi-process run on one machine): the build
    holds a file lock, and a process that waited for it finds the dataset built.
    """
    builder = digits_builder(data_dir, upsample)
    if builder.is_prepared():
        return builder
    import jax

    # The build computes with JAX. In a multi-process run every process must take part in
    # starting JAX's backend, so start it before a process can wait on the lock.
    jax.local_devices()
    with _build_lock(str(builder.data_dir)):
        builder = digits_builder(data_dir, upsample)
        if not builder.is_prepared():
            _log.info("building afc_digits/%s into %s", config_name(upsample), builder.data_dir)
            # TFDS prints "Downloading and preparing dataset ..." to stdout: nothing is
            # downloaded here, so its words go to the debug log instead of the console.
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(
                        compute_stats=tfds.download.ComputeStatsMode.SKIP
                    )
                )
            if printed.getvalue().strip():
                _log.debug("%s", printed.getvalue().strip())
    return digits_builder(data_dir, upsample)


@contextlib.contextmanager
def _build_lock(builder_dir: str):
    """An exclusive lock file beside the dataset's folder (local file systems; a no-op on
    object stores, where each host builds for itself anyway)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or "://" in builder_dir:
        yield
        return
    # builder_dir is <data_dir>/afc_digits/<config>/<version>: the lock goes in data_dir.
    root = os.path.dirname(os.path.dirname(os.path.dirname(builder_dir.rstrip("/"))))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".afc_digits_build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
