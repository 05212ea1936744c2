"""Rollout, flow, relevancy, pattern scores and head statistics against their definitions.

Oracles are written here from the papers' formulas (numpy), importing none of the
modules' helpers; each property has a canary that a wrong implementation would fail.
"""

import numpy as np
import pytest

from attnlab.analysis import head_stats, patterns
from attnlab.analysis.relevancy import relevancy
from attnlab.analysis.rollout import flow, rollout

T, H = 6, 3


def _random_weights(rng, layers, causal=True):
  """[L] of [H, T, T] row-stochastic (causal) matrices."""
  out = []
  for _ in range(layers):
    w = rng.random((H, T, T)) ** 3
    if causal:
      w = w * np.tri(T)
    out.append(w / w.sum(-1, keepdims=True))
  return out


def test_rollout_rows_sum_to_one_and_match_the_formula():
  ws = _random_weights(np.random.default_rng(0), 3)
  r = rollout(ws)
  np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-12)
  # oracle: R = prod_l rownorm(mean_h A_l + I), last layer on the left
  mats = [(w.mean(0) + np.eye(T)) / (w.mean(0) + np.eye(T)).sum(-1, keepdims=True) for w in ws]
  np.testing.assert_allclose(r, mats[2] @ mats[1] @ mats[0], atol=1e-12)
  # canary: the other multiplication order differs
  assert np.abs(r - mats[0] @ mats[1] @ mats[2]).max() > 1e-3


def test_rollout_of_an_identity_layer_is_the_identity():
  eye = [np.broadcast_to(np.eye(T), (H, T, T))]
  np.testing.assert_allclose(rollout(eye), np.eye(T), atol=1e-12)
  # canary: a uniform causal layer is not the identity
  uni = np.tri(T) / np.tri(T).sum(-1, keepdims=True)
  assert np.abs(rollout([np.broadcast_to(uni, (H, T, T))]) - np.eye(T)).max() > 0.1


def test_relevancy_with_zero_gradient_is_the_identity_and_follows_chefer():
  rng = np.random.default_rng(1)
  ws = _random_weights(rng, 2)
  np.testing.assert_allclose(relevancy(ws, [np.zeros_like(w) for w in ws]), np.eye(T), atol=0)
  gs = [rng.normal(size=w.shape) for w in ws]
  r = np.eye(T)
  for a, g in zip(ws, gs):  # Chefer et al., 2021, Eqs. 5-6
    r = r + np.maximum(g * a, 0).mean(0) @ r
  np.testing.assert_allclose(relevancy(ws, gs), r, atol=1e-12)
  # canary: without the clipping of negative contributions the result differs
  r2 = np.eye(T)
  for a, g in zip(ws, gs):
    r2 = r2 + (g * a).mean(0) @ r2
  assert np.abs(relevancy(ws, gs) - r2).max() > 1e-3


def test_flow_equals_rollout_on_one_layer_and_differs_on_two():
  rng = np.random.default_rng(2)
  one = _random_weights(rng, 1)
  np.testing.assert_allclose(flow(one), rollout(one), atol=1e-5)
  two = _random_weights(rng, 2)
  f = flow(two)
  np.testing.assert_allclose(f.sum(-1), 1.0, atol=1e-9)
  assert np.abs(f - rollout(two)).max() > 1e-3  # canary: flow is not rollout in general
  # independent oracle: networkx max-flow on the layered graph, rows normalised (Abnar & Zuidema's code)
  import networkx as nx
  mats = [(w.mean(0) + np.eye(T)) / (w.mean(0) + np.eye(T)).sum(-1, keepdims=True) for w in two]
  g = nx.DiGraph()
  for layer, a in enumerate(mats):
    for i in range(T):
      for j in range(T):
        if a[i, j] > 0:
          g.add_edge((layer, j), (layer + 1, i), capacity=a[i, j])
  ref = np.array([[nx.maximum_flow_value(g, (0, j), (2, i)) if nx.has_path(g, (0, j), (2, i)) else 0.0
                   for j in range(T)] for i in range(T)])
  np.testing.assert_allclose(f, ref / ref.sum(-1, keepdims=True), atol=1e-5)
  # max-flow from token 0 to output 0 through the causal graph is the single path's bottleneck
  mats = [(w.mean(0) + np.eye(T)) / (w.mean(0) + np.eye(T)).sum(-1, keepdims=True) for w in two]
  assert f[0, 0] == pytest.approx(1.0)  # output 0 sees only input 0
  assert mats[0][0, 0] == pytest.approx(1.0) and mats[1][0, 0] == pytest.approx(1.0)


def test_flow_refuses_long_sequences():
  with pytest.raises(ValueError, match="max_length"):
    flow([np.ones((1, 70, 70)) / 70])


def test_prefix_matching_singles_out_a_hand_built_induction_head():
  """Repeated random tokens [r, r]; head 0 attends to the token after the earlier copy
  (induction), head 1 to the previous token, head 2 uniformly (causal)."""
  n = 8
  rng = np.random.default_rng(3)
  r = rng.permutation(np.arange(2, 30))[:n]
  tokens = np.concatenate([r, r])
  t = 2 * n
  ind = np.zeros((t, t))
  for i in range(t):
    ind[i, i - n + 1 if i >= n else i] = 1.0  # second half: key i - n + 1; first half: self
  prev = np.eye(t, k=-1)
  prev[0, 0] = 1.0
  uni = np.tri(t) / np.tri(t).sum(-1, keepdims=True)
  w = np.stack([ind, prev, uni])[None]  # [B=1, H, T, T]
  s = patterns.scores([w], tokens[None])
  pm = s["prefix_matching"][0]
  assert pm[0] == pytest.approx(1.0) and pm[1] < 0.2 and pm[2] < 0.2
  assert s["previous_token"][0][1] == pytest.approx(1.0) and s["previous_token"][0][0] < 0.2
  # oracle of the pattern itself: query n + k -> key k + 1
  p = patterns.prefix_matching_pattern(tokens)
  assert all(p[n + k, k + 1] for k in range(n - 1)) and p[:n].sum() == 0
  # canary: the previous-token head scores 1 on the wrong pattern only
  assert patterns.pattern_score(w[0], p)[1] < 0.2


def test_head_statistics_on_known_maps():
  t = 5
  prev = np.eye(t, k=-1)
  prev[0, 0] = 1.0
  first = np.zeros((t, t))
  first[:, 0] = 1.0
  uni = np.tri(t) / np.tri(t).sum(-1, keepdims=True)
  w = np.stack([prev, first, uni])[None]
  s = head_stats.head_statistics([w])
  np.testing.assert_allclose(s["previous_token"][0], [1.0, 0.25, np.mean([1 / (i + 1) for i in range(1, t)])])
  np.testing.assert_allclose(s["first_token"][0], [0.25, 1.0, np.mean([1 / (i + 1) for i in range(1, t)])])
  np.testing.assert_allclose(s["entropy"][0][:2], [0.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(s["entropy"][0][2], np.mean([np.log(i + 1) for i in range(t)]))
  np.testing.assert_allclose(s["distance"][0][0], 4 / 5)  # rows 1..4 at distance 1, row 0 at 0
  np.testing.assert_allclose(head_stats.top_token_mass([w], k=1)[0][1], 1.0)
  hidden = [np.ones((1, t, 4))]
  hidden[0][0, 3, 2] = 100.0
  m = head_stats.massive_activations(hidden)
  assert m["ratio"][0] == pytest.approx(100.0) and m["position"][0] == 3


def test_head_importance_ablation_and_pruning_on_a_known_metric():
  """metric(gates) = sum(c * gates): importance |c| (l2-normalised per layer), removing head
  (l, h) costs c[l, h], and pruning the least important first loses least."""
  from attnlab.analysis import head_importance as HI
  c = np.array([[0.1, 2.0, 0.0], [1.0, 0.5, 3.0]])
  metric = lambda g: float((c * np.asarray(g)).sum())  # noqa: E731
  imp = HI.importance(lambda g: c, 2, 3)
  np.testing.assert_allclose(imp, c / np.linalg.norm(c, axis=1, keepdims=True))
  np.testing.assert_allclose(HI.ablation(metric, 2, 3), c.sum() - c)
  curves = HI.pruning_curves(metric, c, [0.0, 0.5, 1.0], seeds=4)
  # least important first: removes 0.0, 0.1, 0.5 at 50%
  np.testing.assert_allclose(curves["importance"], [c.sum(), c.sum() - 0.6, 0.0])
  assert curves["random"][1] < curves["importance"][1]  # canary: a random order loses more here
  np.testing.assert_allclose(curves["random"][[0, 2]], [c.sum(), 0.0])
