"""Training and evaluation input pipelines (tf.data up to the batch, then numpy).

Sources (`config.data.source`):
- "tfds": any TFDS image classification dataset `config.data.name`, read from
  `config.data.data_dir` (else $TFDS_DATA_DIR, else TFDS's default).
- "image_folder": `<config.data.folder>/<split>/<class>/*.{jpg,jpeg,png}` through
  `tfds.folder_dataset.ImageFolder`; sorted class names are the labels.
- "digits": the bundled band-limited `afc_digits` (built into data_dir on first use).

Determinism and resumption (training): epoch e is the host's shard shuffled with a seed made
from (config.seed, e, process_index), truncated to steps_per_epoch * local_batch examples; the
augmentation RNG of the example at position p of that order is a stateless seed made from
(config.seed, e, process_index, p). So the batch of step k is a pure function of (config, k,
process_index, process_count), and `start_step=k` skips the first k % steps_per_epoch batches of
epoch k // steps_per_epoch before decoding anything.

Evaluation: each process reads a contiguous, near-even part of the eval split (sizes differ by
at most one), pads it with masked examples to `eval_steps(...)` full batches, so all processes
run the same number of steps and every example is counted exactly once.

Bad files (image folders): an image that cannot be read or decoded is skipped, not fatal: it
keeps its position as a zero image with mask False (no weight in training, not counted in
evaluation), is counted, and a warning names it. Keeping the position keeps the batch of every
step the same, so resumes stay exact. Configuration mistakes (more classes than
`config.data.num_classes`, a label outside [0, num_classes), a missing or empty dataset or
split) raise `DataError` / `DatasetNotFoundError` with what to change, before any compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from afc_jax.data import augment

try:  # keep TensorFlow off accelerators: JAX owns them
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError):  # already initialised, or no such device type
    pass

_log = logging.getLogger(__name__)

SOURCES = ("tfds", "image_folder", "digits")
IMAGE_FOLDER_LAYOUT = (
    "<folder>/<split>/<class_name>/<image>.{jpg,jpeg,png} (any letter case), e.g. "
    "<folder>/train/n01440764/img0.JPEG and <folder>/val/n01440764/img1.JPEG; class folders "
    "are sorted by name to give the labels 0..num_classes-1"
)
_SALT_SHUFFLE = 0x5F1
_SALT_AUGMENT = 0xA06


class DatasetNotFoundError(FileNotFoundError):
    """The configured dataset, split or folder is not available; the message says what to do."""


class DataError(ValueError):
    """The dataset does not fit the config (class count, labels, image size, batch size)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    num_train: int
    num_eval: int
    image_size: int
    train_split: str
    eval_split: str
    name: str


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass
class _Source:
    """A dataset opened for reading: counts, and per-host streams of (image, label)."""

    name: str
    # "encoded": tf.string bytes (decoded here); "uint8": decoded uint8; "float": float in [0, 1]
    image_kind: str
    dataset_num_classes: int | None
    split_names: tuple[str, ...]

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def host_dataset(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
        """(raw, label) pairs of this host's contiguous part of `split`, in a fixed order;
        `read(raw)` gives the image in `image_kind`."""
        raise NotImplementedError

    # Files on disk can be unreadable or undecodable (TFDS records were checked when built).
    fallible = False

    def read(self, raw) -> tf.Tensor:
        return raw

    def describe(self, raw) -> tf.Tensor:
        """A tf.string naming the example (for warnings about skipped examples)."""
        return tf.constant("")


def _even_bounds(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, stop) of part `process_index` of n items split into near-equal contiguous parts
    (the first n % process_count parts get one more), like `tfds.even_splits`."""
    base, extra = divmod(n, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (1 if process_index < extra else 0)


class _TfdsSource(_Source):
    def __init__(self, builder, name: str):
        info = builder.info
        keys = info.supervised_keys
        if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
            self.image_key, self.label_key = keys
        else:
            self.image_key, self.label_key = "image", "label"
        features = info.features
        for key in (self.image_key, self.label_key):
            if key not in features:
                raise DataError(
                    f"TFDS dataset {name!r} has no {key!r} feature (features: {list(features)}); "
                    "only image classification datasets with image and label features work here"
                )
        image_feature = features[self.image_key]
        if isinstance(image_feature, tfds.features.Image):
            kind = "encoded"
        elif np.dtype(image_feature.np_dtype) == np.uint8:
            kind = "uint8"
        else:
            kind = "float"
        label_feature = features[self.label_key]
        num_classes = getattr(label_feature, "num_classes", None)
        super().__init__(
            name=name,
            image_kind=kind,
            dataset_num_classes=num_classes,
            split_names=tuple(info.splits.keys()),
        )
        self.builder = builder
        self.decoders = {self.image_key: tfds.decode.SkipDecoding()} if kind == "encoded" else None

    def _as_dataset(self, split) -> tf.data.Dataset:
        read_config = tfds.ReadConfig(try_autocache=False)
        return self.builder.as_dataset(
            split=split, decoders=self.decoders, shuffle_files=False, read_config=read_config
        )

    def num_examples(self, split: str) -> int:
        splits = self.builder.info.splits
        if len(splits):
            try:
                return int(splits[split].num_examples)
            except (KeyError, ValueError) as e:
                raise DatasetNotFoundError(
                    f"split {split!r} does not exist in TFDS dataset {self.name!r}; available "
                    f"splits: {sorted(splits.keys())} (sub-splits like 'train[:90%]' work too). "
                    "Set config.data.train_split / config.data.eval_split."
                ) from e
        # Split sizes unknown (no dataset_info.json, e.g. under tfds.testing.mock_data): ask the
        # dataset, which knows its cardinality without reading it.
        n = int(self._as_dataset(split).cardinality())
        if n < 0:
            raise DatasetNotFoundError(
                f"cannot tell how many examples split {split!r} of {self.name!r} has "
                "(no split metadata); rebuild it with `tfds build`"
            )
        return n

    def host_dataset(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
        sub = split
        if process_count > 1:
            sub = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
        ds = self._as_dataset(sub)
        return ds.map(lambda ex: (ex[self.image_key], ex[self.label_key]))


class _FolderSource(_Source):
    def __init__(self, root: str):
        self.root = root
        builder = _image_folder_builder(root)
        class_names = list(builder.info.features["label"].names)
        examples = getattr(builder, "_split_examples", None)
        if examples is None:  # a future TFDS without the listing: list it the same way
            examples = _list_image_folder(root)
        label_feature = builder.info.features["label"]
        self.examples = {
            split: (
                [os.fspath(e.image_path) for e in items],
                [int(label_feature.str2int(e.label)) for e in items],
            )
            for split, items in examples.items()
        }
        self.class_names = class_names
        super().__init__(
            name=f"image_folder:{root}",
            image_kind="encoded",
            dataset_num_classes=len(class_names),
            split_names=tuple(sorted(self.examples)),
        )

    def _split(self, split: str):
        if split not in self.examples:
            missing = os.path.join(self.root, split)
            raise DatasetNotFoundError(
                f"image folder split {split!r} not found: {missing} does not exist or holds no "
                f"images. Available splits under {self.root}: {list(self.split_names)}. "
                f"Expected layout: {IMAGE_FOLDER_LAYOUT}. Set config.data.train_split / "
                "config.data.eval_split to folder names (the official repo uses train and val)."
            )
        return self.examples[split]

    def num_examples(self, split: str) -> int:
        return len(self._split(split)[0])

    fallible = True

    def host_dataset(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
        paths, labels = self._split(split)
        start, stop = _even_bounds(len(paths), process_index, process_count)
        return tf.data.Dataset.from_tensor_slices(
            (np.asarray(paths[start:stop], dtype=object), np.asarray(labels[start:stop], np.int64))
        )

    def read(self, raw) -> tf.Tensor:
        return tf.io.read_file(raw)  # inside the guarded decode: a vanished file is skipped too

    def describe(self, raw) -> tf.Tensor:
        return raw


@functools.lru_cache(maxsize=4)
def _image_folder_builder(root: str):
    return tfds.folder_dataset.ImageFolder(root)


def _list_image_folder(root: str):
    """{split: [item with .image_path, .label]}, the listing ImageFolder makes (fallback)."""
    import random
    from types import SimpleNamespace

    exts = (".jpg", ".jpeg", ".png")
    out = {}
    for split in sorted(tf.io.gfile.listdir(root)):
        split_dir = os.path.join(root, split.rstrip("/"))
        if not tf.io.gfile.isdir(split_dir):
            continue
        items = []
        for cls in sorted(tf.io.gfile.listdir(split_dir)):
            cls_dir = os.path.join(split_dir, cls.rstrip("/"))
            if not tf.io.gfile.isdir(cls_dir):
                continue
            for f in sorted(tf.io.gfile.listdir(cls_dir)):
                if f.lower().endswith(exts):
                    items.append(SimpleNamespace(image_path=os.path.join(cls_dir, f), label=cls))
        random.Random(split.rstrip("/")).shuffle(items)
        out[split.rstrip("/")] = items
    return out


def _resolved_data_dir(config) -> str:
    return (
        config.data.data_dir
        or os.environ.get("TFDS_DATA_DIR")
        or os.path.expanduser("~/tensorflow_datasets")
    )


def _not_prepared_message(config, name: str) -> str:
    data_dir = _resolved_data_dir(config)
    if name.split(":")[0].split("/")[0] == "imagenet2012":
        manual_dir = config.data.manual_dir or os.path.join(data_dir, "downloads", "manual")
        return (
            f"TFDS dataset {name!r} is not prepared in {data_dir}. ImageNet cannot be downloaded "
            "automatically: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
            f"https://image-net.org, put them in {manual_dir} (config.data.manual_dir; default "
            "<data_dir>/downloads/manual) and run\n"
            f"  tfds build imagenet2012 --data_dir={data_dir} --manual_dir={manual_dir}\n"
            "or point config.data.data_dir (or $TFDS_DATA_DIR) at a directory where it is already "
            "prepared, e.g. gs://<bucket>/tensorflow_datasets. Alternatively use "
            "config.data.source='image_folder' with the extracted train/ and val/ folders."
        )
    return (
        f"TFDS dataset {name!r} is not prepared in {data_dir}. Run\n"
        f"  tfds build {name} --data_dir={data_dir}\n"
        "(on a machine with internet access; copy the result if needed) or point "
        "config.data.data_dir (or $TFDS_DATA_DIR) at a directory where it is prepared."
    )


def _open_tfds(config, probe_split: str) -> _TfdsSource:
    name = config.data.name
    data_dir = config.data.data_dir
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"TFDS does not know a dataset called {name!r} and found no prepared copy in "
            f"{_resolved_data_dir(config)}. Check config.data.name (see "
            "https://www.tensorflow.org/datasets/catalog) and config.data.data_dir."
        ) from e
    if not builder.is_prepared():
        # Mocked builders (tfds.testing.mock_data) are never "prepared" but can still be read:
        # only a failing `as_dataset` means the data is really missing. Nothing is read here.
        try:
            builder.as_dataset(split=probe_split)
        except AssertionError as e:
            raise DatasetNotFoundError(_not_prepared_message(config, name)) from e
        except ValueError:
            pass  # a bad split: reported with the available splits by num_examples()
    return _TfdsSource(builder, name)


def _digits_upsample(config) -> int:
    size = int(config.data.image_size)
    factor = config.data.get("digits_upsample", None)
    if factor is None:
        if size % 8:
            raise DataError(
                f"source 'digits' makes (8 f) x (8 f) images; config.data.image_size={size} is not "
                "a multiple of 8 (set it to 32 for the default factor 4)"
            )
        return size // 8
    factor = int(factor)
    if factor == size and size % 8 == 0 and size != 8:  # given as the target size
        factor = size // 8
    if 8 * factor != size:
        raise DataError(
            f"config.data.digits_upsample={factor} makes {8 * factor}x{8 * factor} digits but "
            f"config.data.image_size is {size}; make image_size = 8 * digits_upsample"
        )
    return factor


def _open_source(config, probe_split: str) -> _Source:
    source = config.data.source
    if source == "tfds":
        return _open_tfds(config, probe_split)
    if source == "image_folder":
        root = config.data.folder
        if not root:
            raise DatasetNotFoundError(
                "config.data.source is 'image_folder' but config.data.folder is not set; set it "
                f"to the dataset root. Expected layout: {IMAGE_FOLDER_LAYOUT}"
            )
        root = os.path.expanduser(str(root))
        if not tf.io.gfile.isdir(root):
            raise DatasetNotFoundError(
                f"image folder {root} (config.data.folder) does not exist. Expected layout: "
                f"{IMAGE_FOLDER_LAYOUT}"
            )
        return _FolderSource(root)
    if source == "digits":
        from afc_jax.data import digits

        builder = digits.prepare_digits(config.data.data_dir, _digits_upsample(config))
        return _TfdsSource(builder, "afc_digits")
    raise DataError(f"unknown config.data.source {source!r}; choose one of {SOURCES}")


def _check_classes(source: _Source, config) -> None:
    n = int(config.data.num_classes)
    if n < 1:
        raise DataError(f"config.data.num_classes must be >= 1, got {n}")
    found = source.dataset_num_classes
    if found is None:
        return
    if found > n:
        raise DataError(
            f"{source.name} has {found} classes but config.data.num_classes is {n}: labels "
            f"would fall outside [0, {n}). Set config.data.num_classes = {found}."
        )
    if found < n:
        _log.warning(
            "%s has %d classes; config.data.num_classes=%d (extra outputs never see a label)",
            source.name,
            found,
            n,
        )


def _open_checked(config) -> tuple[_Source, int, int]:
    source = _open_source(config, config.data.train_split)
    _check_classes(source, config)
    num_train = source.num_examples(config.data.train_split)
    num_eval = source.num_examples(config.data.eval_split)
    for split, n in ((config.data.train_split, num_train), (config.data.eval_split, num_eval)):
        if n <= 0:
            hint = f" Expected layout: {IMAGE_FOLDER_LAYOUT}." if source.fallible else ""
            raise DatasetNotFoundError(
                f"split {split!r} of {source.name} is empty (no examples): check "
                f"config.data.train_split / config.data.eval_split and the data.{hint}"
            )
    return source, num_train, num_eval


# ----------------------------------------------------------------------------- public API


def dataset_info(config) -> DatasetInfo:
    """Class count, split sizes and names; raises DatasetNotFoundError (saying what to do)."""
    source, num_train, num_eval = _open_checked(config)
    return DatasetInfo(
        num_classes=int(config.data.num_classes),
        num_train=num_train,
        num_eval=num_eval,
        image_size=int(config.data.image_size),
        train_split=config.data.train_split,
        eval_split=config.data.eval_split,
        name=source.name,
    )


def _local_batch(global_batch: int, process_count: int, what: str) -> int:
    if global_batch < process_count or global_batch % process_count:
        raise DataError(
            f"{what}={global_batch} must be a positive multiple of the process count "
            f"{process_count}"
        )
    return global_batch // process_count


def steps_per_epoch(info: DatasetInfo, config) -> int:
    """Training steps per epoch: num_train // batch_size (the remainder is dropped)."""
    return info.num_train // int(config.batch_size)


def eval_steps(info: DatasetInfo, config, process_count: int) -> int:
    """Eval batches every process yields: ceil(ceil(num_eval / P) / (eval_batch_size / P))."""
    local = _local_batch(int(config.eval_batch_size), process_count, "eval_batch_size")
    per_host = -(-info.num_eval // process_count)
    return max(1, -(-per_host // local))


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index/process_count {process_index}/{process_count}")


def _normalise(img01, config):
    mean = tf.constant(config.data.mean, tf.float32)
    std = tf.constant(config.data.std, tf.float32)
    return (img01 - mean) / std


def _checked_label(label, num_classes: int):
    label = tf.cast(label, tf.int32)
    with tf.control_dependencies(
        [
            tf.debugging.assert_non_negative(label, message="negative label in the dataset"),
            tf.debugging.assert_less(
                label,
                num_classes,
                message=f"label >= config.data.num_classes ({num_classes}): fix num_classes",
            ),
        ]
    ):
        return tf.identity(label)


def _decode_full(image, kind: str) -> tf.Tensor:
    """Decoded float32 (H, W, 3) in source units (0..255 or 0..1)."""
    if kind == "encoded":
        image = augment.decode_rgb(image)
    image = tf.cast(image, tf.float32)
    if image.shape.rank == 2:
        image = image[..., None]
    channels = tf.shape(image)[-1]
    image = tf.cond(
        tf.equal(channels, 1), lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3]
    )
    return tf.ensure_shape(image, (None, None, 3))


def _to_grid(img, kind: str):
    """uint8 sources: back onto the 0..255 integer grid after resampling (like PIL)."""
    if kind == "float":
        return img
    return tf.clip_by_value(tf.round(img), 0.0, 255.0)


def _train_preprocess_fn(config, kind: str, process_index: int):
    size = int(config.data.image_size)
    aug = config.augment
    unit = 1.0 if kind == "float" else 255.0
    mean = tuple(config.data.mean)
    fill = tuple(float(round(m * 255)) for m in (mean * 3 if len(mean) == 1 else mean))
    base_seed = tf.constant([int(config.seed), _SALT_AUGMENT], tf.int64)

    @tf.autograph.experimental.do_not_convert
    def preprocess(epoch, position, image):
        key = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        key = tf.random.experimental.stateless_fold_in(key, process_index)
        key = tf.random.experimental.stateless_fold_in(key, position)
        k_crop, k_flip, k_ra, k_jitter, k_erase = augment.split_seed(key, 5)
        if aug.random_resized_crop:
            scale, ratio = tuple(aug.crop_scale), tuple(aug.crop_ratio)
            if kind == "encoded":
                img = augment.decode_random_resized_crop(image, k_crop, size, scale, ratio)
            else:
                img = augment.random_resized_crop(
                    _decode_full(image, kind),
                    k_crop,
                    size,
                    scale,
                    ratio,
                    uint8_grid=kind != "float",
                )
        else:
            img = augment.resize_short_center_crop(
                _decode_full(image, kind), size, 1.0, uint8_grid=kind != "float"
            )
        img = _to_grid(img, kind)
        if aug.hflip:
            img = augment.random_flip(img, k_flip)
        if aug.randaugment:
            img255 = tf.clip_by_value(tf.round(img * (255.0 / unit)), 0.0, 255.0)
            img255 = augment.rand_augment(
                img255,
                k_ra,
                num_layers=int(aug.randaugment_layers),
                magnitude=float(aug.randaugment_magnitude),
                magnitude_std=float(aug.randaugment_magnitude_std),
                fill=fill,
            )
            img01 = img255 / 255.0
        else:
            img01 = img / unit
            if aug.color_jitter and aug.color_jitter > 0:
                img01 = augment.color_jitter(img01, k_jitter, float(aug.color_jitter))
        img = _normalise(img01, config)
        if aug.random_erasing and aug.random_erasing > 0:
            img = augment.random_erasing(img, k_erase, float(aug.random_erasing))
        return tf.ensure_shape(tf.cast(img, tf.float32), (size, size, 3))

    return preprocess


def _eval_preprocess_fn(config, kind: str):
    size = int(config.data.image_size)
    crop_pct = float(config.data.eval_crop_pct)
    unit = 1.0 if kind == "float" else 255.0

    @tf.autograph.experimental.do_not_convert
    def preprocess(image):
        img = augment.resize_short_center_crop(
            _decode_full(image, kind), size, crop_pct, uint8_grid=kind != "float"
        )
        img = _normalise(_to_grid(img, kind) / unit, config)
        return tf.ensure_shape(tf.cast(img, tf.float32), (size, size, 3))

    return preprocess


def _map_images(ds, source: _Source, image_fn, size: int, num_classes: int) -> tf.data.Dataset:
    """(*keys, raw, label) -> (image, label, ok, name): `image_fn(*keys, source.read(raw))`.

    For fallible sources (files on disk) an example whose reading or decoding fails does not
    stop the pipeline: it becomes a zero image with ok=False (and `name` says which file), in
    its own position, so the batch of a step stays the same with or without a resume. The
    training step gives such examples no weight; evaluation does not count them. Label checks
    stay outside the guard: a bad label is an error, not a skipped example.
    """

    def check(image, label, ok, name):
        return image, _checked_label(label, num_classes), ok, name

    if not source.fallible:

        @tf.autograph.experimental.do_not_convert
        def plain(*args):
            *keys, raw, label = args
            return image_fn(*keys, source.read(raw)), label, tf.constant(True), tf.constant("")

        ds = ds.map(plain, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.map(check)

    @tf.autograph.experimental.do_not_convert
    def guarded(*args):
        *keys, raw, label = args
        element = tf.data.Dataset.from_tensors(tuple(args))

        def good(*a):
            return image_fn(*a[:-2], source.read(a[-2])), tf.constant(True), tf.constant("")

        def bad(*a):
            return tf.zeros((size, size, 3), tf.float32), tf.constant(False), source.describe(a[-2])

        first = element.map(good).ignore_errors().concatenate(element.map(bad)).take(1)
        return first.map(lambda image, ok, name: (image, label, ok, name))

    # One tiny dataset per example (its failure cannot affect the others); the deterministic
    # interleave of single-element datasets keeps the input order.
    ds = ds.interleave(
        guarded,
        cycle_length=tf.data.AUTOTUNE,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(check)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def create_train_dataset(
    config, *, process_index: int = 0, process_count: int = 1, start_step: int = 0
) -> tf.data.Dataset:
    """The infinite tf.data pipeline behind `create_train_iterator` (batched, prefetched)."""
    _check_process(process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    local_batch = _local_batch(int(config.batch_size), process_count, "batch_size")
    source, num_train, _ = _open_checked(config)
    steps = num_train // int(config.batch_size)
    if steps < 1:
        raise DataError(
            f"batch_size={config.batch_size} is larger than the train split ({num_train} "
            f"examples of {source.name}); lower config.batch_size"
        )
    per_epoch = steps * local_batch  # examples per epoch on this host
    start_epoch, start_batch = divmod(int(start_step), steps)
    start_offset = start_batch * local_batch

    base = source.host_dataset(config.data.train_split, process_index, process_count)
    if config.data.cache:
        base = base.cache()
    buffer = int(config.data.shuffle_buffer)
    shuffle_key = tf.constant([int(config.seed), _SALT_SHUFFLE], tf.int64)

    @tf.autograph.experimental.do_not_convert
    def epoch_dataset(epoch):
        ds = base
        if buffer > 1:
            key = tf.random.experimental.stateless_fold_in(shuffle_key, epoch)
            key = tf.random.experimental.stateless_fold_in(key, process_index)
            seed = tf.random.stateless_uniform(
                [], seed=key, minval=None, maxval=None, dtype=tf.int64
            )
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        ds = ds.take(per_epoch).enumerate()
        skip = tf.where(tf.equal(epoch, start_epoch), np.int64(start_offset), np.int64(0))
        ds = ds.skip(skip)
        return ds.map(lambda pos, ex: (epoch, pos, ex[0], ex[1]))

    ds = tf.data.Dataset.counter(start=start_epoch, dtype=tf.int64).flat_map(epoch_dataset)
    ds = _map_images(
        ds,
        source,
        _train_preprocess_fn(config, source.image_kind, process_index),
        int(config.data.image_size),
        int(config.data.num_classes),
    )
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.map(_batch_dict)
    ds = ds.prefetch(int(config.data.prefetch) if config.data.prefetch else tf.data.AUTOTUNE)
    return ds.with_options(_options())


def _batch_dict(image, label, mask, skipped):
    return {"image": image, "label": label, "mask": mask, "skipped": skipped}


class SkippedExamples:
    """Counts (and warns once about) examples that could not be read or decoded."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self.names: list[str] = []  # the first few, for messages
        self._warned: set[bytes] = set()

    def take(self, batch: dict) -> dict:
        """The batch without its "skipped" names; counts and warns about the named ones."""
        batch = dict(batch)
        names = batch.pop("skipped", None)
        if names is not None:
            for name in names[names != b""]:
                self.count += 1
                if name not in self._warned:
                    self._warned.add(name)
                    text = name.decode("utf-8", "replace")
                    if len(self.names) < 20:
                        self.names.append(text)
                    _log.warning(
                        "skipped an undecodable or unreadable image in the %s data: %s "
                        "(%d skipped so far; it gets no weight and is not counted)",
                        self.what,
                        text,
                        self.count,
                    )
        return batch


def _numpy_batches(ds: tf.data.Dataset, skipped: SkippedExamples):
    try:
        for batch in tfds.as_numpy(ds):
            yield skipped.take(batch)
    except Exception as exc:  # not BaseException: GeneratorExit must pass untouched
        if isinstance(exc, tf.errors.InvalidArgumentError) and "label" in str(exc):
            message = str(exc).splitlines()[0]
            raise DataError(f"bad label in the {skipped.what} data: {message}") from None
        raise


class TrainBatches:
    """Iterator of training batches; `.skipped` counts unreadable examples seen so far."""

    def __init__(self, ds: tf.data.Dataset):
        self.skipped = SkippedExamples("training")
        self._it = _numpy_batches(ds, self.skipped)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)


def create_train_iterator(
    config, *, process_index: int = 0, process_count: int = 1, start_step: int = 0
) -> TrainBatches:
    """Infinite iterator of {"image": float32 (B, S, S, 3), "label": int32 (B,), "mask": bool
    (B,)} numpy batches, B = config.batch_size // process_count, this process's part of global
    step start_step, start_step + 1, ...

    Deterministic: the same (config, process_index, process_count) gives the same batch for the
    same step, whatever start_step the iterator was made with. An image-folder file that cannot
    be read or decoded keeps its place as a zero image with mask False (the train step gives it
    no weight); `.skipped.count` counts them and each is warned about once.
    """
    ds = create_train_dataset(
        config, process_index=process_index, process_count=process_count, start_step=start_step
    )
    return TrainBatches(ds)


class EvalBatches:
    """Finite, re-iterable eval batches {"image", "label", "mask"} (iterate once per eval).

    `.skipped.count` counts the unreadable eval examples of the last pass (each file is warned
    about once)."""

    def __init__(self, dataset: tf.data.Dataset, num_steps: int):
        self.dataset = dataset
        self.num_steps = num_steps
        self.skipped = SkippedExamples("evaluation")

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.skipped.count = 0  # per pass; each file is still warned about only once
        return _numpy_batches(self.dataset, self.skipped)


def create_eval_iterator(config, *, process_index: int = 0, process_count: int = 1) -> EvalBatches:
    """This process's eval batches: B = eval_batch_size // process_count examples each, padded
    with masked examples (zeros, label 0, mask False) to `eval_steps(...)` batches."""
    _check_process(process_index, process_count)
    local_batch = _local_batch(int(config.eval_batch_size), process_count, "eval_batch_size")
    source, num_train, num_eval = _open_checked(config)
    info = DatasetInfo(
        int(config.data.num_classes),
        num_train,
        num_eval,
        int(config.data.image_size),
        config.data.train_split,
        config.data.eval_split,
        source.name,
    )
    steps = eval_steps(info, config, process_count)
    size = int(config.data.image_size)

    ds = source.host_dataset(config.data.eval_split, process_index, process_count)
    if config.data.cache:
        ds = ds.cache()
    ds = _map_images(
        ds,
        source,
        _eval_preprocess_fn(config, source.image_kind),
        size,
        int(config.data.num_classes),
    )
    pad = tf.data.Dataset.from_tensors(
        (
            tf.zeros((size, size, 3), tf.float32),
            tf.constant(0, tf.int32),
            tf.constant(False),
            tf.constant(""),
        )
    ).repeat()
    ds = ds.concatenate(pad).take(steps * local_batch)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.map(_batch_dict)
    ds = ds.prefetch(int(config.data.prefetch) if config.data.prefetch else tf.data.AUTOTUNE)
    return EvalBatches(ds.with_options(_options()), steps)


def local_eval_count(num_eval: int, process_index: int, process_count: int) -> int:
    """Real (unmasked) eval examples on one process."""
    start, stop = _even_bounds(num_eval, process_index, process_count)
    return stop - start


__all__ = [
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EvalBatches",
    "SkippedExamples",
    "TrainBatches",
    "create_eval_iterator",
    "create_train_dataset",
    "create_train_iterator",
    "dataset_info",
    "eval_steps",
    "local_eval_count",
    "steps_per_epoch",
]
