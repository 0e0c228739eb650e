"""Train/eval pipelines: TFDS (mocked ImageNet), image folders, digits; determinism, resume,
per-process sharding and eval coverage; errors that say what to do."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from afc_jax import data
from configs.base import base_config
from tests.data import batches_equal, digits_config, image_hash, no_augment

# ----------------------------------------------------------------------------- TFDS (mocked)


def _imagenet_config(tmp_path):
    c = base_config()  # the ImageNet recipe: crop, flip, RandAugment, erasing
    c.data.data_dir = str(tmp_path)
    c.data.image_size = 32
    c.data.shuffle_buffer = 16
    c.batch_size = 8
    c.eval_batch_size = 8
    return c


def test_mocked_imagenet_train_and_eval(tmp_path):
    c = _imagenet_config(tmp_path)
    with tfds.testing.mock_data(num_examples=16):
        info = data.dataset_info(c)
        assert (info.num_classes, info.num_train, info.num_eval) == (1000, 16, 16)
        assert (info.name, info.train_split, info.eval_split) == (
            "imagenet2012",
            "train",
            "validation",
        )
        batch = next(data.create_train_iterator(c))
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
        assert np.isfinite(batch["image"]).all()
        assert ((batch["label"] >= 0) & (batch["label"] < 1000)).all()

        batches = list(data.create_eval_iterator(c))
    assert len(batches) == data.eval_steps(info, c, 1) == 2
    images = np.concatenate([b["image"] for b in batches])
    assert images.shape == (16, 32, 32, 3) and all(b["mask"].all() for b in batches)
    # mock pixels are uniform on 0..255: the normalised channel means sit near (0.5 - m) / s
    expected = (0.5 - np.array(c.data.mean)) / np.array(c.data.std)
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), expected, atol=0.25)


# ----------------------------------------------------------------------------- image folder

COLOURS = {"zebra": (20, 20, 230), "apple": (230, 20, 20), "mango": (20, 230, 20)}  # B, R, G


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """<root>/{train,val}/<class>/ with solid-colour images: the label is the bright channel
    (classes sorted: apple=0 red, mango=1 green, zebra=2 blue)."""
    root = tmp_path_factory.mktemp("folder")
    sizes = [(40, 30), (30, 52), (64, 64), (33, 47)]
    exts = [("png", "PNG"), ("jpg", "JPEG"), ("JPEG", "JPEG"), ("jpeg", "JPEG")]
    for split, n in (("train", 4), ("val", 2)):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                ext, fmt = exts[i] if split == "train" else ("png", "PNG")
                Image.new("RGB", sizes[i], colour).save(d / f"img{i}.{ext}", format=fmt)
    (root / "train" / "apple" / "notes.txt").write_text("not an image")
    return root


def _folder_config(root, **aug):
    c = base_config()
    c.data.source = "image_folder"
    c.data.folder = str(root)
    c.data.train_split = "train"
    c.data.eval_split = "val"
    c.data.num_classes = 3
    c.data.image_size = 32
    c.data.mean = (0.5, 0.5, 0.5)
    c.data.std = (0.5, 0.5, 0.5)
    c.data.shuffle_buffer = 8
    c.batch_size = 6
    c.eval_batch_size = 4
    no_augment(c)
    for k, v in aug.items():
        setattr(c.augment, k, v)
    return c


def _bright_channel(images):
    pixels = images * 0.5 + 0.5  # back to [0, 1]
    return pixels.mean(axis=(1, 2)).argmax(-1)


def test_image_folder_train_and_eval(image_folder):
    c = _folder_config(image_folder, random_resized_crop=True, hflip=True, color_jitter=0.4)
    info = data.dataset_info(c)
    assert (info.num_train, info.num_eval, info.num_classes) == (12, 6, 3)
    assert info.name == f"image_folder:{image_folder}"
    it = data.create_train_iterator(c)
    labels = []
    for _ in range(4):  # two epochs
        b = next(it)
        assert b["image"].shape == (6, 32, 32, 3) and b["label"].dtype == np.int32
        np.testing.assert_array_equal(_bright_channel(b["image"]), b["label"])
        labels.append(b["label"])
    assert sorted(np.concatenate(labels[:2])) == [0] * 4 + [1] * 4 + [2] * 4  # one epoch

    ev = data.create_eval_iterator(c)
    for _ in range(2):  # re-iterable
        batches = list(ev)
        assert len(batches) == len(ev) == 2
        mask = np.concatenate([b["mask"] for b in batches])
        labels = np.concatenate([b["label"] for b in batches])
        images = np.concatenate([b["image"] for b in batches])
        assert mask.tolist() == [True] * 6 + [False] * 2
        np.testing.assert_array_equal(_bright_channel(images[mask]), labels[mask])
        assert sorted(labels[mask]) == [0, 0, 1, 1, 2, 2]
        assert not images[~mask].any() and not labels[~mask].any()
        np.testing.assert_allclose(images[mask].max(), 230 / 255 * 2 - 1, atol=0.02)


# ----------------------------------------------------------------------------- determinism


def test_resume_with_full_augmentation():
    # crop, flip, RandAugment and erasing all on: the per-example RNG is stateless
    c = digits_config()
    c.batch_size = 16
    a = data.create_train_iterator(c)
    first = [next(a) for _ in range(3)]
    assert not batches_equal(first[1], first[2])
    assert batches_equal(next(data.create_train_iterator(c, start_step=2)), first[2])


def test_same_seed_same_batches_and_resume_across_epochs(image_folder):
    # 12 images, batch 6: 2 steps per epoch; crop, flip and colour jitter on
    c = _folder_config(image_folder, random_resized_crop=True, hflip=True, color_jitter=0.4)
    assert data.steps_per_epoch(data.dataset_info(c), c) == 2
    it = data.create_train_iterator(c)
    ref = [next(it) for _ in range(6)]
    assert batches_equal(next(data.create_train_iterator(c)), ref[0])
    resumed = data.create_train_iterator(c, start_step=3)  # mid-epoch 1, on into epoch 2
    for k in range(3, 6):
        assert batches_equal(next(resumed), ref[k])
    # a new order (and new augmentations) every epoch
    assert not all(batches_equal(ref[k], ref[k + 2]) for k in range(2))
    c.seed = 1
    assert not batches_equal(next(data.create_train_iterator(c)), ref[0])


def test_train_epoch_reads_each_host_shard_once():
    c = no_augment(digits_config())
    c.batch_size = 128  # 11 steps per epoch
    seen = []
    for p in range(2):
        it = data.create_train_iterator(c, process_index=p, process_count=2)
        hashes = [image_hash(x) for _ in range(11) for x in next(it)["image"]]
        assert len(hashes) == 11 * 64 == len(set(hashes))  # no repeats within an epoch
        seen.append(set(hashes))
    assert not seen[0] & seen[1]  # the processes read disjoint parts of the split


# ----------------------------------------------------------------------------- eval coverage


@pytest.mark.parametrize("process_count", [1, 3, 8])
def test_eval_covers_every_example_exactly_once(process_count):
    c = digits_config()
    c.eval_batch_size = 48  # does not divide the 360 test digits, nor their shares
    info = data.dataset_info(c)
    steps = data.eval_steps(info, c, process_count)
    counts = collections.Counter()
    label_counts = collections.Counter()
    for p in range(process_count):
        ev = data.create_eval_iterator(c, process_index=p, process_count=process_count)
        batches = list(ev)
        assert len(batches) == len(ev) == steps
        real = 0
        for b in batches:
            assert b["image"].shape == (48 // process_count, 32, 32, 3)
            assert b["mask"].dtype == np.bool_
            assert not b["image"][~b["mask"]].any() and not b["label"][~b["mask"]].any()
            real += int(b["mask"].sum())
            counts.update(image_hash(x) for x in b["image"][b["mask"]])
            label_counts.update(b["label"][b["mask"]].tolist())
        assert real == data.local_eval_count(360, p, process_count)
    assert sum(counts.values()) == 360 and len(counts) == 360  # each digit exactly once
    from sklearn.datasets import load_digits

    from afc_jax.data.digits import digits_split_indices

    test_labels = load_digits().target[digits_split_indices()[1]]
    assert label_counts == collections.Counter(test_labels.tolist())


# ----------------------------------------------------------------------------- errors


def test_missing_imagenet_says_what_to_do(tmp_path):
    c = _imagenet_config(tmp_path)
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.dataset_info(c)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for part in (
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        str(tmp_path / "downloads" / "manual"),
        "tfds build imagenet2012",
        f"--data_dir={tmp_path}",
        "gs://",
    ):
        assert part in msg
    c.data.manual_dir = "/somewhere/tars"
    with pytest.raises(data.DatasetNotFoundError, match="--manual_dir=/somewhere/tars"):
        data.create_train_iterator(c)


def test_missing_tfds_dataset_and_unknown_name(tmp_path):
    c = _imagenet_config(tmp_path)
    c.data.name = "cifar10"
    expected = re.escape(f"tfds build cifar10 --data_dir={tmp_path}")
    with pytest.raises(data.DatasetNotFoundError, match=expected):
        data.dataset_info(c)
    c.data.name = "no_such_dataset_xyz"
    with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset_xyz"):
        data.dataset_info(c)


def test_missing_split_lists_available_ones():
    c = digits_config(eval_split="validation")
    with pytest.raises(data.DatasetNotFoundError, match=r"'validation'.*\['test', 'train'\]"):
        data.dataset_info(c)


def test_too_few_classes():
    with pytest.raises(ValueError, match="has 10 classes.*num_classes = 10"):
        data.dataset_info(digits_config(num_classes=5))


def test_folder_errors(image_folder, tmp_path):
    c = _folder_config(image_folder)
    c.data.folder = None
    with pytest.raises(data.DatasetNotFoundError, match="config.data.folder is not set"):
        data.dataset_info(c)
    c.data.folder = str(tmp_path / "nowhere")
    with pytest.raises(data.DatasetNotFoundError, match=r"nowhere.*does not exist.*<split>/<class"):
        data.dataset_info(c)
    c = _folder_config(image_folder)
    c.data.eval_split = "validation"
    with pytest.raises(data.DatasetNotFoundError, match=r"validation.*\['train', 'val'\]"):
        data.create_eval_iterator(c)
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    (tmp_path / "val" / "cls").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "cls" / "a.png")
    c.data.folder, c.data.eval_split = str(tmp_path), "val"
    with pytest.raises(data.DatasetNotFoundError, match="'train'.*(empty|no images)"):
        data.dataset_info(c)


def test_folder_listing_fallback_matches_image_folder(image_folder):
    from afc_jax.data.pipeline import _image_folder_builder, _list_image_folder

    ours = _list_image_folder(str(image_folder))
    theirs = _image_folder_builder(str(image_folder))._split_examples
    assert ours.keys() == theirs.keys()
    for split in ours:
        assert [(str(e.image_path), e.label) for e in ours[split]] == [
            (str(e.image_path), e.label) for e in theirs[split]
        ]


def test_batch_sizes_must_split_over_processes():
    c = digits_config()
    with pytest.raises(ValueError, match="multiple of the process count 5"):
        data.create_train_iterator(c, process_index=0, process_count=5)
