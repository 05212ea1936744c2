"""attnlab.data.pathfinder: determinism, balance, and the rule that a path joins the dots iff label 1."""

import numpy as np
import pytest
from scipy import ndimage

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
