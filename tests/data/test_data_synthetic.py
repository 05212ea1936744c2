"""Synthetic generators: correctness of targets and weights, determinism, argument errors."""

import numpy as np
import pytest

from attnlab.data import copy, induction, mqar, selective_copy
from attnlab.data.associative_recall import mqar_gap_probs


def _assert_example(ex, seq_len):
  assert set(ex) == {"inputs", "targets", "weights"}
  assert ex["inputs"].shape == ex["targets"].shape == ex["weights"].shape == (seq_len,)
  assert ex["inputs"].dtype == np.int32 and ex["targets"].dtype == np.int32
  assert ex["weights"].dtype == np.float32


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_queries_recall_their_values(random_non_queries):
  v, t, p = 128, 64, 8
  for index in range(50):
    ex = mqar(3, index, vocab_size=v, seq_len=t, num_kv_pairs=p,
              random_non_queries=random_non_queries)
    _assert_example(ex, t)
    x, y, w = ex["inputs"], ex["targets"], ex["weights"]
    keys, values = x[0:2 * p:2], x[1:2 * p:2]
    assert np.all((keys >= 1) & (keys < v // 2)) and len(set(keys)) == p
    assert np.all((values >= v // 2) & (values < v)) and len(set(values)) == p
    pairs = dict(zip(keys.tolist(), values.tolist()))
    query_pos = np.flatnonzero(w)
    assert len(query_pos) == p and set(np.unique(w)) == {0.0, 1.0}
    assert np.all(query_pos >= 2 * p) and np.all((query_pos - 2 * p) % 2 == 0)
    assert sorted(x[query_pos].tolist()) == sorted(keys.tolist())  # every key queried once
    for q in query_pos:
      assert y[q] == pairs[int(x[q])]
    unweighted = np.flatnonzero(w == 0)
    unweighted = unweighted[unweighted < t - 1]
    np.testing.assert_array_equal(y[unweighted], x[unweighted + 1])
    if not random_non_queries:
      region = np.zeros(t, bool)
      region[2 * p:] = True
      region[query_pos] = False
      assert np.all(x[region] == 0)


def test_mqar_power_law_favours_short_gaps():
  p = mqar_gap_probs(100, 0.01)
  assert np.isclose(p.sum(), 1.0) and np.all(np.diff(p) < 0)
  first = [np.flatnonzero(mqar(0, i, vocab_size=256, seq_len=256, num_kv_pairs=4)["weights"]).min()
           for i in range(200)]
  assert np.median(first) < 2 * 4 + 2 * 30  # most queries land near the context


GENERATORS = {"mqar": mqar, "copy": copy, "selective_copy": selective_copy, "induction": induction}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_determinism_per_seed_and_index(name):
  kw = {"seq_len": 64, "vocab_size": 64}
  if name == "mqar":
    kw["num_kv_pairs"] = 4
  if name == "selective_copy":
    kw["num_tokens"] = 8
  fn = GENERATORS[name]
  a, b, c, d = fn(1, 7, **kw), fn(1, 7, **kw), fn(1, 8, **kw), fn(2, 7, **kw)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["inputs"], c["inputs"])
  assert not np.array_equal(a["inputs"], d["inputs"])
  _assert_example(a, 64)


def test_copy():
  ex = copy(0, 0, vocab_size=10, seq_len=20, num_tokens=6)
  x, y, w = ex["inputs"], ex["targets"], ex["weights"]
  assert x[6] == 1 and np.all(x[:6] >= 2)
  np.testing.assert_array_equal(y[w == 1], x[:6])
  assert np.flatnonzero(w).tolist() == list(range(6, 12))
  np.testing.assert_array_equal(y[:-1], x[1:])
  assert copy(0, 0, seq_len=20)["weights"].sum() == 10  # default n = seq_len // 2


def test_selective_copy():
  t, n = 40, 5
  ex = selective_copy(0, 3, vocab_size=12, seq_len=t, num_tokens=n)
  x, y, w = ex["inputs"], ex["targets"], ex["weights"]
  context = x[:t - n]
  data = context[context >= 2]
  assert len(data) == n and np.sum(context == 0) == t - 2 * n
  assert x[t - n] == 1  # marker
  np.testing.assert_array_equal(y[w == 1], data)  # in order
  assert np.flatnonzero(w).tolist() == list(range(t - n, t))


def test_induction():
  for i in range(20):
    ex = induction(0, i, vocab_size=8, seq_len=30)
    x, y, w = ex["inputs"], ex["targets"], ex["weights"]
    trig = np.flatnonzero(x == 1)
    assert len(trig) == 2 and trig[1] == 29
    assert np.flatnonzero(w).tolist() == [29]
    assert y[29] == x[trig[0] + 1] and y[29] >= 2


@pytest.mark.parametrize("fn,kw,match", [
    (mqar, dict(vocab_size=8192, seq_len=60, num_kv_pairs=16), "too short"),
    (mqar, dict(vocab_size=16, seq_len=256, num_kv_pairs=16), "vocab_size=16 is too small"),
    (mqar, dict(vocab_size=64, seq_len=63, num_kv_pairs=4), "even"),
    (copy, dict(vocab_size=16, seq_len=10, num_tokens=6), "too short"),
    (selective_copy, dict(vocab_size=2, seq_len=10, num_tokens=2), "vocab_size"),
    (induction, dict(vocab_size=16, seq_len=3), "seq_len"),
])
def test_bad_arguments_raise_one_line(fn, kw, match):
  with pytest.raises(ValueError, match=match) as e:
    fn(0, 0, **kw)
  assert "\n" not in str(e.value)


def test_gumbel_top_k_matches_successive_sampling():
  from attnlab.data.associative_recall import sample_without_replacement
  p = np.array([0.5, 0.3, 0.15, 0.05])
  rng = np.random.default_rng(0)
  draws = np.array([sample_without_replacement(rng, p, 2) for _ in range(20000)])
  assert np.all(draws[:, 0] != draws[:, 1])
  second = [sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(4)]
  np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=4) / 20000, p, atol=0.015)
  np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=4) / 20000, second, atol=0.015)
