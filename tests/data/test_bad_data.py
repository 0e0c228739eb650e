"""Bad data: undecodable images are skipped (counted, warned about, resumes stay exact); wrong
labels, missing or empty datasets and splits are clear errors raised before any compilation."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from PIL import Image

from afc_jax import data
from afc_jax.data import pipeline
from afc_jax.data.pipeline import DataError, DatasetNotFoundError
from afc_jax.train.loop import train_and_evaluate
from tests.data import batches_equal, digits_data_dir, no_augment

CLASSES = {"apple": (230, 20, 20), "mango": (20, 230, 20), "zebra": (20, 20, 230)}


def _write_bad_files(folder):
    """Five kinds of unreadable image files; returns their paths."""
    good = folder / "apple" / "img0.png"
    bad = {
        folder / "apple" / "garbage.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 3,
        folder / "mango" / "truncated.png": good.read_bytes()[:60],
        folder / "zebra" / "empty.jpeg": b"",
        folder / "zebra" / "notes.png": b"just some text, not a PNG\n",
    }
    for path, content in bad.items():
        path.write_bytes(content)
    directory = folder / "mango" / "folder.jpg"  # a directory with an image name
    directory.mkdir()
    return sorted(str(p) for p in [*bad, directory])


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_folder")
    for split, n in (("train", 5), ("val", 2)):
        for name, colour in CLASSES.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30 + i), colour).save(root / split / name / f"img{i}.png")
    bad_train = _write_bad_files(root / "train")
    (root / "val" / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0broken")
    return root, bad_train


def _config(root, **overrides):
    from configs.base import base_config

    c = base_config()
    c.data.source = "image_folder"
    c.data.folder = str(root)
    c.data.train_split, c.data.eval_split = "train", "val"
    c.data.num_classes = 3
    c.data.image_size = 32
    c.data.mean = c.data.std = (0.5, 0.5, 0.5)
    c.data.shuffle_buffer = 64
    c.batch_size = 8
    c.eval_batch_size = 4
    no_augment(c)
    c.augment.hflip = True
    for key, value in overrides.items():
        setattr(c.data, key, value)
    return c


def test_undecodable_images_are_skipped_with_a_count_and_a_warning(bad_folder, caplog):
    root, bad_train = bad_folder
    c = _config(root)
    info = data.dataset_info(c)
    assert (info.num_train, info.num_eval) == (20, 7)  # bad files are listed like good ones
    it = data.create_train_iterator(c)
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        epoch = [next(it) for _ in range(2)]  # 20 // 8 = 2 steps: 16 of the 20 files
        more = [next(it) for _ in range(2 * 4)]  # 4 more epochs
    masks = np.concatenate([b["mask"] for b in epoch])
    skipped_first_epoch = int((~masks).sum())
    for b in epoch + more:
        assert set(b) == {"image", "label", "mask"}
        assert b["image"].shape == (8, 32, 32, 3) and np.isfinite(b["image"]).all()
        assert not b["image"][~b["mask"]].any()  # zero images in their place
        assert ((b["label"] >= 0) & (b["label"] < 3)).all()
        bright = (b["image"] * 0.5 + 0.5).mean(axis=(1, 2)).argmax(-1)
        assert (bright[b["mask"]] == np.argsort(list(CLASSES))[b["label"][b["mask"]]]).all()
    total = sum(int((~b["mask"]).sum()) for b in epoch + more)
    assert it.skipped.count == total and total >= 5  # each epoch draws 16 of the 20 files
    assert skipped_first_epoch >= 1
    assert sorted(it.skipped.names) == bad_train  # every bad file was met and named once
    warnings = [r.getMessage() for r in caplog.records if "skipped an undecodable" in r.message]
    assert len(warnings) == len(bad_train)
    assert all(any(p in w for w in warnings) for p in bad_train)

    ev = data.create_eval_iterator(c)
    for _ in range(2):  # re-iterable; the count is per pass
        batches = list(ev)
        mask = np.concatenate([b["mask"] for b in batches])
        assert int(mask.sum()) == 6 and ev.skipped.count == 1
        assert set(batches[0]) == {"image", "label", "mask"}


def test_skipped_images_keep_their_place_so_resumes_are_exact(bad_folder):
    root, _ = bad_folder
    c = _config(root)
    it = data.create_train_iterator(c)
    ref = [next(it) for _ in range(6)]  # 3 epochs
    assert sum(int((~b["mask"]).sum()) for b in ref) > 0
    for start in (1, 3, 4):
        resumed = data.create_train_iterator(c, start_step=start)
        for k in range(start, 6):
            assert batches_equal(next(resumed), ref[k]), (start, k)


def test_a_label_outside_the_class_range_is_an_error_not_a_skip(bad_folder, monkeypatch):
    root, _ = bad_folder
    with pytest.raises(DataError, match=r"has 3 classes but config.data.num_classes is 2"):
        data.dataset_info(_config(root, num_classes=2))
    # Sources that do not declare their class count are checked while reading: an error that
    # names the problem, raised by the first batch (which the loop reads before compiling).
    monkeypatch.setattr(pipeline, "_check_classes", lambda source, config: None)
    it = data.create_train_iterator(_config(root, num_classes=2))
    with pytest.raises(DataError, match=r"bad label in the training data.*num_classes \(2\)"):
        for _ in range(3):
            next(it)


@pytest.fixture
def no_compilation(monkeypatch):
    """Any jax.jit or jax.eval_shape call fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("compiled or traced before the error")

    monkeypatch.setattr(jax, "jit", forbidden)
    monkeypatch.setattr(jax, "eval_shape", forbidden)


def _train_config(**data_fields):
    from configs import digits

    c = digits.get_config("model=convnext_baseline_circular,image_size=32")  # as built above
    c.unlock()
    c.data.data_dir = digits_data_dir()
    c.batch_size, c.eval_batch_size = 8, 8  # the test process has 8 devices
    for key, value in data_fields.items():
        setattr(c.data, key, value)
    return c


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            dict(source="image_folder", folder="/nonexistent/imagenet"),
            DatasetNotFoundError,
            r"/nonexistent/imagenet .*does not exist",
        ),
        (
            dict(source="tfds", name="no_such_dataset_abc"),
            DatasetNotFoundError,
            "no_such_dataset_abc",
        ),
        (
            dict(eval_split="validation"),
            DatasetNotFoundError,
            r"'validation' does not exist.*"
            r"\['test', 'train'\]",
        ),
        (dict(train_split="train[:0]"), DatasetNotFoundError, r"split 'train\[:0\]' .* is empty"),
        (dict(num_classes=5), DataError, r"has 10 classes but config.data.num_classes is 5"),
    ],
    ids=["missing-folder", "unknown-tfds", "missing-split", "empty-split", "too-few-classes"],
)
def test_missing_empty_or_mismatched_data_fails_before_any_compilation(
    fields, error, message, tmp_path, no_compilation
):
    with pytest.raises(error, match=message):
        train_and_evaluate(_train_config(**fields), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_empty_image_folder_split_fails_before_any_compilation(tmp_path, no_compilation):
    (tmp_path / "data" / "train" / "cls").mkdir(parents=True)  # no images at all
    (tmp_path / "data" / "val" / "cls").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "val" / "cls" / "a.png")
    c = _train_config(
        source="image_folder", folder=str(tmp_path / "data"), eval_split="val", num_classes=1
    )
    with pytest.raises(
        DatasetNotFoundError,
        match=r"split 'train' of image_folder:.* is empty.*<split>/<class_name>",
    ):
        train_and_evaluate(c, str(tmp_path / "run"))
