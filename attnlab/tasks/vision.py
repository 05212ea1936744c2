"""Image classification (`vision`): digits, pathfinder, an image folder or TFDS mnist / fashion_mnist / cifar10.

Batches: inputs float32 [B, H, W, C] (normalised per channel with the train split's mean
and std), targets int32 [B], weights float32 [B] (0 for eval padding rows). Model: `vit`
(`attnlab.models.vision`; config.task.model="crossvit": `attnlab.models.crossvit`), given {"num_classes", "image_shape"}. Data
(`attnlab.data.images`, `attnlab.data.pathfinder`), by config.task.dataset:

- "digits": scikit-learn's 8x8 digits, a fixed stratified train / test split
  (test_fraction, data_seed);
- "pathfinder": LRA Pathfinder generated on the fly (image_size, pathfinder_* keys);
  train_size images for training (0 = a fresh image per step), test_size for test;
- "folder": data_dir/<class>/*.png|jpg (held-out test_fraction), or data_dir/train and
  data_dir/test (and optionally data_dir/val) when those exist; image_size resizes;
- "mnist", "fashion_mnist", "cifar10": `tfds.data_source` under data_dir (the `tfds` extra).

split="val" evaluates on a stratified val_fraction held out of train (which then trains on
the rest); split="test" trains on all of train and evaluates on test. Training examples are
augmented (crop_pad, flip) deterministically in (seed, example index). The loss is
cross-entropy with label smoothing `label_smoothing` (metric "loss"); "accuracy" and
"cross_entropy" (unsmoothed) are reported too.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnlab.data import images as im
from attnlab.data import pathfinder as pf
from attnlab.data import pipeline
from attnlab.tasks import metrics as metrics_lib
from attnlab.tasks.base import Task
from attnlab.tasks.classification import EVAL_SPLITS, covering_eval_batches
from attnlab.tasks.registry import register_task

DATASETS = ("digits", "pathfinder", "folder") + im.TFDS_DATASETS
MODELS_2D = ("vit", "crossvit")


class IndexedSource:
  """The images of `src` at `indices` (a lazy subset of any ImageSource)."""

  def __init__(self, src, indices: np.ndarray):
    self.src, self.indices = src, np.asarray(indices)
    self.num_classes, self.image_shape = src.num_classes, src.image_shape

  def __len__(self) -> int:
    return len(self.indices)

  def get(self, index: int):
    """(image, label) of src at indices[index]."""
    return self.src.get(int(self.indices[index]))


@register_task("vision")
class VisionTask(Task):
  """Classify images with the `vit` model (see the module docstring)."""

  model = "vit"  # overridden per instance by config.task.model
  DEFAULTS = {"model": "vit", "dataset": "digits", "data_dir": "", "split": "test", "val_fraction": 0.1,
              "test_fraction": 0.2, "data_seed": 0, "image_size": 0, "crop_pad": 1, "flip": False,
              "label_smoothing": 0.0, "train_size": 0, "test_size": 2000,
              "pathfinder_difficulty": "easy", "pathfinder_cache": ""}
  HELP = {
      "model": f"the image model (a MODELS key): {', '.join(MODELS_2D)}",
      "dataset": f"one of {', '.join(DATASETS)}",
      "data_dir": "folder: the image folder; TFDS datasets: the TFDS data_dir ('' = default)",
      "split": 'eval split: "val" (held out of train) or "test"',
      "val_fraction": "stratified hold-out of train for split=val",
      "test_fraction": "digits / single image folder: stratified test hold-out",
      "data_seed": "seed of the digits / folder / val hold-outs",
      "image_size": "folder: resize to image_size^2 (0 = keep); pathfinder: canvas size (0 = 32)",
      "crop_pad": "train augmentation: zero-pad by this many pixels, then random-crop back (0 = off)",
      "flip": "train augmentation: random horizontal flips",
      "label_smoothing": "label smoothing of the training loss, in [0, 1)",
      "train_size": "pathfinder: number of training images (0 = a fresh image for every example)",
      "test_size": "pathfinder: number of val / test images",
      "pathfinder_difficulty": f"pathfinder: one of {', '.join(pf.DIFFICULTIES)}",
      "pathfinder_cache": "pathfinder: a folder for the generated images of the finite splits ('' = none)",
  }

  def __init__(self, config):
    """Reads config.task (see HELP); the data is opened lazily."""
    super().__init__(config)
    self.model = str(self.cfg.model)

  # ---- data ------------------------------------------------------------------

  @functools.cached_property
  def _splits(self) -> dict[str, Any]:
    """{"train": source, "val" or "test": source}, opened once."""
    c = self.cfg
    name = str(c.dataset)
    if name == "digits":
      base = im.digits_splits(float(c.test_fraction), int(c.data_seed))
      train, test = base["train"], base["test"]
    elif name == "pathfinder":
      size = int(c.image_size) or 32
      opts = dict(image_size=size, difficulty=str(c.pathfinder_difficulty))
      train = pf.PathfinderSource(self.stream_seed("pathfinder/train"), int(c.train_size) or 1 << 62, **opts)
      test = pf.PathfinderSource(self.stream_seed("pathfinder/test"), int(c.test_size), **opts)
      val = pf.PathfinderSource(self.stream_seed("pathfinder/val"), int(c.test_size), **opts)
      splits = {"train": train, "val": val, "test": test}
      if c.pathfinder_cache:  # every finite split read once from its .npz (generated on first use)
        splits = {k: self._cached(s) if k in ("train", self.eval_split) else s for k, s in splits.items()}
      return splits
    elif name == "folder":
      root = str(c.data_dir)
      if os.path.isdir(os.path.join(root, "train")):
        load = lambda sub: im.folder_source(os.path.join(root, sub), int(c.image_size))  # noqa: E731
        train = load("train")
        test = load("test") if os.path.isdir(os.path.join(root, "test")) else None
        if os.path.isdir(os.path.join(root, "val")):
          return {"train": train, "val": load("val"), "test": test}
      else:
        train, test = im.stratified_split(im.folder_source(root, int(c.image_size)),
                                          float(c.test_fraction), int(c.data_seed))
    elif name in im.TFDS_DATASETS:
      train = im.TfdsSource(name, "train", str(c.data_dir))
      test = im.TfdsSource(name, "test", str(c.data_dir))
    else:
      raise ValueError(f"vision: dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    splits = {"train": train, "test": test}
    if self.eval_split == "val":
      if isinstance(train, im.ArraySource):
        splits["train"], splits["val"] = im.stratified_split(train, float(c.val_fraction), int(c.data_seed))
      else:  # a lazy source: the last val_fraction of the training indices
        n_val = max(1, int(round(float(c.val_fraction) * len(train))))
        splits["train"] = IndexedSource(train, np.arange(len(train) - n_val))
        splits["val"] = IndexedSource(train, np.arange(len(train) - n_val, len(train)))
    return splits

  def _cached(self, src: pf.PathfinderSource):
    """src as an in-memory ArraySource from pf.cached_arrays; a fresh-image stream stays as is."""
    if src.size > 1 << 20:
      return src
    images, labels = pf.cached_arrays(src, str(self.cfg.pathfinder_cache))
    return im.ArraySource(images, labels, src.num_classes)

  @functools.cached_property
  def _stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of the training images."""
    return im.channel_stats(self._splits["train"])

  @property
  def eval_split(self) -> str:
    """config.task.split."""
    return str(self.cfg.split)

  def source(self, split: str):
    """The ImageSource of `split` ("train", "val", "test")."""
    src = self._splits.get(split)
    if src is None:
      raise ValueError(f"vision: dataset {self.cfg.dataset!r} has no {split!r} split")
    return src

  def validate(self) -> None:
    """Checks keys and values, opens the data (one-line errors), checks sizes against the batch."""
    super().validate()
    c = self.cfg
    if self.model not in MODELS_2D:
      raise ValueError(f"vision: model must be one of {', '.join(MODELS_2D)}, got {self.model!r}")
    if c.dataset not in DATASETS:
      raise ValueError(f"vision: dataset must be one of {', '.join(DATASETS)}, got {c.dataset!r}")
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError(f"vision: split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
    if not 0.0 <= float(c.label_smoothing) < 1.0:
      raise ValueError(f"vision: label_smoothing must be in [0, 1), got {c.label_smoothing}")
    if int(c.crop_pad) < 0:
      raise ValueError(f"vision: crop_pad must be >= 0, got {c.crop_pad}")
    if c.dataset == "pathfinder" and c.pathfinder_difficulty not in pf.DIFFICULTIES:
      raise ValueError(f"vision: pathfinder_difficulty must be one of {pf.DIFFICULTIES}, "
                       f"got {c.pathfinder_difficulty!r}")
    n = len(self.source("train"))
    if n < self.batch_size:
      raise ValueError(f"vision: the train split has {n} images, fewer than batch_size={self.batch_size}")
    self.source(self.eval_split)

  # ---- contract ----------------------------------------------------------------

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images."""
    return tuple(int(s) for s in self.source("train").image_shape)

  @property
  def num_classes(self) -> int:
    """Number of classes."""
    return int(self.source("train").num_classes)

  def input_spec(self) -> dict[str, Any]:
    """inputs float32 [B, H, W, C], targets int32 [B], weights float32 [B]."""
    b = self.batch_size
    return {"inputs": jax.ShapeDtypeStruct((b, *self.image_shape), jnp.float32),
            "targets": jax.ShapeDtypeStruct((b,), jnp.int32),
            "weights": jax.ShapeDtypeStruct((b,), jnp.float32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"num_classes": C, "image_shape": (H, W, C)}."""
    return {"num_classes": self.num_classes, "image_shape": self.image_shape}

  def train_examples(self) -> im.TrainExamples:
    """The index -> augmented training example function."""
    mean, std = self._stats
    return im.TrainExamples(self.source("train"), mean, std, self.stream_seed("train"),
                            int(self.cfg.crop_pad), bool(self.cfg.flip))

  def train_iterator(self, shard_index=None, shard_count=None):
    """Infinite checkpointable iterator of augmented batches (state: the next example index)."""
    return pipeline.train_iterator(self.train_examples(), batch_size=self.batch_size,
                                   seed=self.stream_seed("shuffle"), num_examples=None,
                                   shard_index=shard_index, shard_count=shard_count)

  def eval_batches(self, shard_index=None, shard_count=None):
    """Every image of the eval split once (normalised, unaugmented); the last batch padded with weight 0."""
    src = self.source(self.eval_split)
    mean, std = self._stats
    return covering_eval_batches(im.EvalExamples(src, mean, std), num_examples=len(src),
                                 batch_size=self.batch_size, shard_index=shard_index,
                                 shard_count=shard_count)

  def metrics(self, outputs: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """loss (label-smoothed cross-entropy), cross_entropy and accuracy pairs for logits [B, C]."""
    base = metrics_lib.classification_metrics(outputs, batch)
    eps = float(self.cfg.label_smoothing)
    if not eps:
      return {**base, "cross_entropy": base["loss"]}
    c = outputs.shape[-1]
    soft = optax.smooth_labels(jax.nn.one_hot(batch["targets"], c), eps)
    loss = optax.softmax_cross_entropy(outputs.astype(jnp.float32), soft)
    return {"loss": metrics_lib.weighted_pair(loss, batch["weights"]),
            "cross_entropy": base["loss"], "accuracy": base["accuracy"]}
