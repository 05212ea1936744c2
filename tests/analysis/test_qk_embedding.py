"""The query-key joint embedding (AttentionViz, Yeh et al., 2023): the captured q and k are
the ones the layer's weights come from, and the normalisation removes what softmax ignores."""

import jax
import numpy as np

from attnlab.analysis import capture as C
from attnlab.analysis import qk_embedding as Q
from attnlab.config_loading import load_config
from attnlab.train.state import init_state
from attnlab.train.trainer import setup
from tests.analysis.test_analyze_cli import CONFIG


def _causal_softmax(q, k):
  """softmax(q k^T / sqrt(D)) under the causal mask: q, k [B, T, H, D] -> [B, H, T, T]."""
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  s = np.where(np.tri(s.shape[-1], dtype=bool), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def test_captured_queries_and_keys_reproduce_the_captured_weights():
  run = setup(load_config(CONFIG + ":smoke=True", []))  # causal mha, 2 layers x 2 heads
  variables = init_state(run.init_fn, run.shardings, run.rules).variables()
  x = np.asarray(run.eval_batches[0]["inputs"])
  qk = jax.device_get(jax.jit(lambda v, t: Q.capture_qk(run.model, v, t))(variables, x))
  weights = jax.device_get(jax.jit(lambda v, t: C.capture(run.model, v, t))(variables, x)["weights"])
  assert len(qk) == len(weights) == 2
  for (q, k), w in zip(qk, weights):
    np.testing.assert_allclose(_causal_softmax(np.asarray(q), np.asarray(k)), w, atol=1e-5)
    # canary: queries and keys swapped give other weights
    assert np.abs(_causal_softmax(np.asarray(k), np.asarray(q)) - w).max() > 1e-3
  emb = Q.embeddings(qk)
  assert len(emb) == 2 and len(emb[0]) == 2 and emb[0][0][0].shape == (x.size, 2)


def test_joint_embedding_ignores_a_key_shift_and_matches_norms():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(40, 8)), 5.0 * rng.normal(size=(30, 8)) + 3.0
  base_q, base_k = Q.joint_embedding(q, k)
  # a shift of every key changes no softmax row (q . c is constant per row): nothing moves
  shift = rng.normal(size=8) * 10
  moved = np.concatenate(Q.joint_embedding(q, k + shift))
  np.testing.assert_allclose(np.abs(moved), np.abs(np.concatenate([base_q, base_k])), atol=1e-8)  # PCA sign
  # norm matching: keys 5x larger than queries come out at comparable spread
  assert 0.3 < base_k.std() / base_q.std() < 3.0
  # canary: a plain joint PCA (no translation, no norm matching) is moved by the shift
  from sklearn.decomposition import PCA
  plain = PCA(2).fit_transform(np.concatenate([q, k]))
  plain_moved = PCA(2).fit_transform(np.concatenate([q, k + shift]))
  assert np.abs(np.abs(plain) - np.abs(plain_moved)).max() > 0.1
  plain_k = plain[len(q):]
  assert plain_k.std() / plain[:len(q)].std() > 3.0
