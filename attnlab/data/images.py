"""Image classification data: scikit-learn digits, image folders, TFDS; augmentation (numpy only).

Every source is an `ImageSource`: `len(src)` images, `src.get(i) -> (image float32 [H, W, C]
in [0, 1], label int)`, `src.num_classes`, `src.image_shape` (H, W, C). Sources:

- `digits_splits(test_fraction, seed)`: scikit-learn's 1,797 8x8 handwritten digits
  (shipped inside the scikit-learn wheel, no download), split into train / test by a fixed
  stratified draw: for each class c, `round(test_fraction * n_c)` of its images, chosen by
  `np.random.default_rng(seed).permutation`, go to test.
- `folder_source(root, image_size, channels)`: one sub-folder of `root` per class (sorted
  names are the class ids), PNG / JPEG files inside, read with PIL and resized to
  image_size x image_size.
- `tfds_source(name, split, data_dir)`: `tfds.data_source` (ArrayRecord, random access,
  no TensorFlow at read time) for mnist / fashion_mnist / cifar10; the data must have been
  prepared (`tfds build NAME --data_dir DIR`); tensorflow-datasets is the `tfds` extra.

`stratified_split` carves a validation hold-out from a train source the same way.
`TrainExamples` / `EvalExamples` turn a source into the `index -> example` functions of
`attnlab.data.pipeline`: examples are {"inputs" float32 [H, W, C] (normalised), "targets"
int32 [], "weights" float32 []}. Training example k (a global counter, so the grain
iterator's state is just its next index) is image `perm_e[k mod N]` of epoch e = k // N
(a fresh permutation per epoch from the seed; a source with `shuffled = True`, whose images
are already i.i.d. draws such as a generated Pathfinder stream, gives image k mod N),
augmented with `example_rng(seed, k)`: random crop after zero padding by `crop_pad` pixels,
horizontal flip with probability 1/2 when `flip`. The same (seed, k) gives the same example, in any order, on any host.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Protocol, Sequence

import numpy as np

from attnlab.data.seeding import example_rng

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageSource(Protocol):
  """Random-access labelled images: len(), get(i) -> (float32 [H, W, C] in [0, 1], int label)."""
  num_classes: int
  image_shape: tuple[int, int, int]

  def __len__(self) -> int: ...

  def get(self, index: int) -> tuple[np.ndarray, int]: ...


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Images held in memory: images float32 [N, H, W, C] in [0, 1], labels int32 [N]."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...] = ()

  def __post_init__(self):
    if self.images.ndim != 4 or len(self.images) != len(self.labels):
      raise ValueError(f"ArraySource needs images [N, H, W, C] and labels [N], got "
                       f"{self.images.shape} and {self.labels.shape}")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C)."""
    return tuple(int(s) for s in self.images.shape[1:])

  def __len__(self) -> int:
    return len(self.labels)

  def get(self, index: int) -> tuple[np.ndarray, int]:
    """(image float32 [H, W, C], label)."""
    return self.images[index], int(self.labels[index])

  def subset(self, indices: np.ndarray) -> "ArraySource":
    """The images at `indices`, in that order."""
    return ArraySource(self.images[indices], self.labels[indices], self.num_classes, self.class_names)


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held_out) sorted index arrays: per class c, round(fraction * n_c) indices held out,
  chosen by np.random.default_rng(seed).permutation of that class's indices (classes in order)."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    held.append(idx[rng.permutation(len(idx))[:int(round(fraction * len(idx)))]])
  held_out = np.sort(np.concatenate(held))
  kept = np.setdiff1d(np.arange(len(labels)), held_out)
  return kept, held_out


def stratified_split(src: ArraySource, fraction: float, seed: int) -> tuple[ArraySource, ArraySource]:
  """(rest, held-out) of an in-memory source, stratified by label (`stratified_indices`)."""
  kept, held = stratified_indices(src.labels, fraction, seed)
  return src.subset(kept), src.subset(held)


@functools.lru_cache(maxsize=4)
def digits_splits(test_fraction: float = 0.2, seed: int = 0) -> dict[str, ArraySource]:
  """{"train", "test"}: scikit-learn's 8x8 digits (float32 [N, 8, 8, 1] = pixel / 16), stratified."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("dataset=digits needs scikit-learn: pip install scikit-learn") from None
  d = load_digits()
  src = ArraySource((d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int32), 10,
                    tuple(str(i) for i in range(10)))
  train, test = stratified_split(src, test_fraction, seed)
  return {"train": train, "test": test}


def folder_source(root: str, image_size: int = 0, channels: int = 0) -> ArraySource:
  """Images under root/<class>/*.png|jpg|jpeg as an ArraySource (class ids: sorted folder names).

  image_size > 0 resizes to image_size x image_size (bilinear); 0 keeps the size, which must
  then be the same for every file. channels: 1 (grey), 3 (RGB) or 0 (3 unless every image
  is greyscale)."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("dataset=folder needs Pillow: pip install pillow") from None
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist (expected root/<class>/<image>.png)")
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
  if len(classes) < 2:
    raise ValueError(f"image folder {root!r} needs at least 2 class sub-folders, found {len(classes)}")
  files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
           for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not files:
    raise ValueError(f"image folder {root!r} has no {'/'.join(IMAGE_EXTENSIONS)} files in its class folders")
  pil = [_open_image(Image, p) for p, _ in files]
  if channels == 0:
    channels = 1 if all(im.mode in ("L", "1", "I;16") for im in pil) else 3
  if channels not in (1, 3):
    raise ValueError(f"channels must be 0, 1 or 3, got {channels}")
  arrays = []
  for (path, _), im in zip(files, pil):
    im = im.convert("L" if channels == 1 else "RGB")
    if image_size:
      im = im.resize((image_size, image_size), Image.BILINEAR)
    a = np.asarray(im, np.float32) / 255.0
    arrays.append(a[..., None] if channels == 1 else a)
  shapes = {a.shape for a in arrays}
  if len(shapes) > 1:
    raise ValueError(f"images in {root!r} have different sizes {sorted(shapes)[:3]}; set task.image_size")
  return ArraySource(np.stack(arrays), np.array([c for _, c in files], np.int32), len(classes),
                     tuple(classes))


def _open_image(image_module, path: str):
  """PIL's image at `path`, read now; a file PIL cannot read (not an image, truncated) is a
  one-line ValueError naming it."""
  try:
    im = image_module.open(path)
    im.load()
  except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError (an OSError), truncated files
    raise ValueError(f"image folder: {path} is not a readable image ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
  return im


class TfdsSource:
  """A TFDS dataset split through `tfds.data_source` (random access; images decoded per read)."""

  def __init__(self, name: str, split: str, data_dir: str = ""):
    """Opens NAME's prepared SPLIT under data_dir (default TFDS dir); one-line errors."""
    if name not in TFDS_DATASETS:
      raise ValueError(f"TFDS dataset must be one of {TFDS_DATASETS}, got {name!r}")
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(f"dataset={name} needs tensorflow-datasets: pip install 'attnlab[tfds]'") from None
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001  (tfds raises several types for missing data)
      where = data_dir or "~/tensorflow_datasets"
      raise FileNotFoundError(
          f"TFDS {name}:{split} is not prepared in {where} ({type(e).__name__}); prepare it with "
          f"`tfds build {name} --data_dir {where}` on a machine with internet, then copy the folder") from None
    features = tfds.builder(name, data_dir=data_dir or None).info.features
    self.num_classes = int(features["label"].num_classes)
    self.image_shape = tuple(int(s) for s in features["image"].shape)
    self.name, self.split = name, split

  def __len__(self) -> int:
    return len(self._ds)

  def get(self, index: int) -> tuple[np.ndarray, int]:
    """(image float32 [H, W, C] in [0, 1], label)."""
    rec = self._ds[int(index)]
    return np.asarray(rec["image"], np.float32) / 255.0, int(rec["label"])


def channel_stats(src: ImageSource, max_images: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """(mean [C], std [C]) over the first min(N, max_images) images of src (float32)."""
  n = min(len(src), max_images)
  if n < 1:
    raise ValueError("cannot compute image statistics of an empty split")
  x = np.stack([src.get(i)[0] for i in range(n)]).astype(np.float64)
  return (x.mean(axis=(0, 1, 2)).astype(np.float32),
          np.maximum(x.std(axis=(0, 1, 2)), 1e-6).astype(np.float32))


def augment(image: np.ndarray, rng: np.random.Generator, *, crop_pad: int = 0,
            flip: bool = False) -> np.ndarray:
  """image [H, W, C] -> [H, W, C]: zero-pad by crop_pad, crop a random H x W window, then flip
  left-right with probability 1/2 when `flip`. Draws from rng in that order (2 ints, 1 bit)."""
  h, w = image.shape[:2]
  if crop_pad > 0:
    padded = np.pad(image, ((crop_pad, crop_pad), (crop_pad, crop_pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * crop_pad + 1, size=2)
    image = padded[dy:dy + h, dx:dx + w]
  if flip and rng.random() < 0.5:
    image = image[:, ::-1]
  return np.ascontiguousarray(image)


@dataclasses.dataclass(frozen=True)
class EvalExamples:
  """index -> the normalised example `index` of src, unaugmented, weight 1 (a picklable function)."""
  src: ImageSource
  mean: np.ndarray
  std: np.ndarray

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    image, label = self.src.get(int(index))
    return {"inputs": ((image - self.mean) / self.std).astype(np.float32),
            "targets": np.int32(label), "weights": np.float32(1.0)}


@dataclasses.dataclass(frozen=True)
class TrainExamples:
  """Global training index k -> augmented, normalised example (see the module docstring)."""
  src: ImageSource
  mean: np.ndarray
  std: np.ndarray
  seed: int
  crop_pad: int = 0
  flip: bool = False

  def permutation(self, epoch: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(len(src)) from (seed, epoch)."""
    return _epoch_permutation(len(self.src), self.seed, epoch)

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    if getattr(self.src, "shuffled", False):  # i.i.d. examples (a generated stream): read k directly
      image, label = self.src.get(int(index) % len(self.src))
    else:
      epoch, pos = divmod(int(index), len(self.src))
      image, label = self.src.get(int(self.permutation(epoch)[pos]))
    image = augment(image, example_rng(self.seed, int(index)), crop_pad=self.crop_pad, flip=self.flip)
    return {"inputs": ((image - self.mean) / self.std).astype(np.float32),
            "targets": np.int32(label), "weights": np.float32(1.0)}


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0x1A6E])).permutation(n)


def stack_examples(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Stacks example dicts along a new leading batch axis."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
