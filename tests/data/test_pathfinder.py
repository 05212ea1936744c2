"""attnlab.data.pathfinder: determinism, balance, the rule that a path joins the dots iff label 1,
the .npz cache, and the fresh-image stream read by index."""

import os

import numpy as np
import pytest
from scipy import ndimage

from attnlab.data import images as im
from attnlab.data import pathfinder as pf


def components(mask):
  """8-connected component labels of a boolean mask (0 = background)."""
  labels = np.zeros(mask.shape, int)
  n = 0
  for start in zip(*np.nonzero(mask)):
    if labels[start]:
      continue
    n += 1
    stack = [start]
    labels[start] = n
    while stack:
      r, c = stack.pop()
      for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
          rr, cc = r + dr, c + dc
          if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not labels[rr, cc]:
            labels[rr, cc] = n
            stack.append((rr, cc))
  return labels


def test_deterministic_and_shaped():
  a, la = pf.pathfinder(3, 5)
  b, lb = pf.pathfinder(3, 5)
  np.testing.assert_array_equal(a, b)
  assert la == lb and a.shape == (32, 32, 1) and a.dtype == np.float32
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert not np.array_equal(a, pf.pathfinder(3, 6)[0])


def test_dots_joined_iff_label_one_and_labels_balanced():
  rules = pf.Rules()
  labels = []
  for i in range(16):
    rng = pf.example_rng(11, i)
    label = int(rng.integers(2))
    image, info = pf.generate(rng, rules, label)
    labels.append(label)
    # Dilating by one pixel joins each snake's dashes and keeps distinct snakes apart.
    comp = components(ndimage.binary_dilation(image[..., 0] > 0, np.ones((3, 3), bool)))
    (r0, c0), (r1, c1) = (tuple(int(v) for v in np.floor(m)) for m in info["markers"])
    assert (comp[r0, c0] == comp[r1, c1]) == bool(label), i
    assert len(info["snakes"]) >= 2
    snake_comps = [set(comp[tuple(px.T)].tolist()) for px in info["snakes"]]
    assert all(len(s) == 1 for s in snake_comps)
    assert len({next(iter(s)) for s in snake_comps}) == len(snake_comps)  # snakes never touch
  assert 3 <= sum(labels) <= 13


def test_source_and_bad_difficulty():
  src = pf.PathfinderSource(seed=1, size=4, difficulty="intermediate")
  assert len(src) == 4 and src.image_shape == (32, 32, 1)
  image, label = src.get(2)
  assert image.shape == (32, 32, 1) and label in (0, 1)
  with pytest.raises(ValueError, match="difficulty"):
    pf.pathfinder(0, 0, difficulty="impossible")


def test_cached_arrays_round_trip_and_key(tmp_path):
  src = pf.PathfinderSource(seed=5, size=3)
  images, labels = pf.cached_arrays(src, str(tmp_path))
  for i in range(3):  # the generator's images, in order
    image, label = src.get(i)
    np.testing.assert_array_equal(images[i], image)
    assert labels[i] == label
  path = pf.cache_path(src, str(tmp_path))
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary file left
  np.savez(path, images=images * 0, labels=labels)  # a later call reads the file, not the generator
  assert pf.cached_arrays(src, str(tmp_path))[0].max() == 0
  assert pf.cache_path(pf.PathfinderSource(seed=6, size=3), str(tmp_path)) != path


def test_stream_source_is_read_by_index_without_a_permutation():
  stream = pf.PathfinderSource(seed=3, size=1 << 62)  # task.train_size=0
  ex = im.TrainExamples(stream, np.zeros(1, np.float32), np.ones(1, np.float32), seed=1)
  np.testing.assert_array_equal(ex(7)["inputs"], stream.get(7)[0])
  finite = im.ArraySource(np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1), np.arange(4), 4)
  order = [int(im.TrainExamples(finite, np.zeros(1), np.ones(1), seed=1)(k)["targets"]) for k in range(4)]
  assert sorted(order) == [0, 1, 2, 3]  # an in-memory source is still permuted per epoch


def test_a_canvas_too_small_for_the_contours_is_a_clear_error_not_a_hang():
  """At 16 x 16 the two long contours never fit: the generator gives up with a one-line error
  (it retried forever before)."""
  with pytest.raises(ValueError, match="do not fit a 16x16 canvas"):
    pf.pathfinder(0, 0, image_size=16)
