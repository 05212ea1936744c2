"""attnlab.data.images: the digits split, augmentation, training/eval example functions, readers."""

import numpy as np
import pytest

from attnlab.data import images as im


def test_digits_split_is_fixed_stratified_and_disjoint():
  s = im.digits_splits(0.2, 0)
  train, test = s["train"], s["test"]
  assert len(train) + len(test) == 1797 and len(test) == 359
  assert train.image_shape == (8, 8, 1) and train.images.dtype == np.float32
  assert 0.0 <= train.images.min() and train.images.max() <= 1.0
  counts_train, counts_test = np.bincount(train.labels, minlength=10), np.bincount(test.labels, minlength=10)
  np.testing.assert_array_equal(counts_test, np.round(0.2 * (counts_train + counts_test)).astype(int))
  # Disjoint: no test image equals a train image at the same index set (images are distinct rows).
  kept, held = im.stratified_indices(np.concatenate([train.labels, test.labels]), 0.2, 0)
  assert not set(kept) & set(held)
  again = im.digits_splits.__wrapped__(0.2, 0)
  np.testing.assert_array_equal(again["test"].labels, test.labels)
  np.testing.assert_array_equal(again["test"].images, test.images)


def test_augment_is_a_shift_with_zero_fill_and_flip():
  img = np.arange(1, 1 + 5 * 6, dtype=np.float32).reshape(5, 6, 1)
  rng = np.random.default_rng(3)
  out = im.augment(img, np.random.default_rng(3), crop_pad=1)
  dy, dx = rng.integers(0, 3, size=2)
  padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))
  np.testing.assert_array_equal(out, padded[dy:dy + 5, dx:dx + 6])
  flips = [np.array_equal(im.augment(img, np.random.default_rng(s), flip=True), img[:, ::-1])
           for s in range(40)]
  assert 5 < sum(flips) < 35
  np.testing.assert_array_equal(im.augment(img, rng), img)  # no augmentation: identity


def test_train_examples_deterministic_epochs_cover_every_image():
  s = im.digits_splits(0.2, 0)["test"]
  mean, std = im.channel_stats(s)
  fn = im.TrainExamples(s, mean, std, seed=7, crop_pad=1)
  a, b = fn(12), fn(12)
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert a["inputs"].shape == (8, 8, 1) and a["targets"].dtype == np.int32
  n = len(s)
  np.testing.assert_array_equal(np.sort(fn.permutation(0)), np.arange(n))
  assert not np.array_equal(fn.permutation(0), fn.permutation(1))
  labels = [int(fn(i)["targets"]) for i in range(n)]
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(s.labels, minlength=10))
  # Same image, different augmentation in the next epoch (index n + pos of the same image).
  e = im.EvalExamples(s, mean, std)(0)
  np.testing.assert_allclose(e["inputs"], (s.images[0] - mean) / std, rtol=1e-6)


def test_folder_reader_png_jpeg_and_errors(tmp_path):
  from PIL import Image
  for c, value in (("cat", 40), ("dog", 200)):
    (tmp_path / c).mkdir()
    for i in range(3):
      arr = np.full((10, 12, 3), value, np.uint8)
      Image.fromarray(arr).save(tmp_path / c / f"{i}.{'png' if i % 2 else 'jpg'}")
  src = im.folder_source(str(tmp_path), image_size=8)
  assert len(src) == 6 and src.image_shape == (8, 8, 3) and src.class_names == ("cat", "dog")
  np.testing.assert_array_equal(src.labels, [0, 0, 0, 1, 1, 1])
  np.testing.assert_allclose(src.images[0], 40 / 255, atol=0.02)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    im.folder_source(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="at least 2 class"):
    im.folder_source(str(tmp_path / "cat"))


def test_tfds_missing_data_is_one_line_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises((FileNotFoundError, ImportError)) as e:
    im.TfdsSource("mnist", "train", str(tmp_path))
  assert "\n" not in str(e.value) and "tfds build mnist" in str(e.value)
  with pytest.raises(ValueError, match="must be one of"):
    im.TfdsSource("imagenet", "train")


def test_tfds_source_and_task_on_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  import ml_collections
  from attnlab.tasks import build_task, default_task_config
  with tfds.testing.mock_data(num_examples=12):
    src = im.TfdsSource("mnist", "train")
    assert len(src) == 12 and src.num_classes == 10 and src.image_shape == (28, 28, 1)
    image, label = src.get(3)
    assert image.shape == (28, 28, 1) and image.dtype == np.float32 and 0 <= label < 10
    config = ml_collections.ConfigDict({
        "seed": 0, "task": {**default_task_config("vision").to_dict(), "dataset": "mnist"},
        "train": {"batch_size": 4, "eval_batches": 1}})
    task = build_task(config)
    task.validate()
    assert task.model_kwargs() == {"num_classes": 10, "image_shape": (28, 28, 1)}
    batch = next(task.train_iterator(shard_index=0, shard_count=1))
    assert batch["inputs"].shape == (4, 28, 28, 1)
    assert sum(b["weights"].sum() for b in task.eval_batches(shard_index=0, shard_count=1)) == 12
