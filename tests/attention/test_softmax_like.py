"""Oracle and contract tests for the softmax-like weight maps: cog, sigmoid,
softmax_off_by_one, scalable_softmax (and their query-tiled XLA paths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax.scalable import scalable_softmax_attention, scalable_softmax_attention_reference
from attnlab.attention.ops.softmax.sigmoid import sigmoid_attention
from attnlab.attention.ops.softmax.signed import signed_softmax_attention
from attnlab.attention.ops.softmax.sink import sink_softmax_attention
from tests.attention import contract

VARIANTS = {
    "cog": dict(num_heads=2),
    "sigmoid": dict(num_heads=2),
    "softmax_off_by_one": dict(num_heads=2),
    "scalable_softmax": dict(num_heads=2),
}
NAMES = list(VARIANTS)


# ---- independent oracle ------------------------------------------------------------

def rope_np(x, pos, base=10000.0):
  """Independent RoPE: rotate pairs (i, i + D/2) by pos * base^(-2i/D). x [B,T,H,D], pos [T]."""
  d = x.shape[-1]
  ang = np.asarray(pos, np.float64)[None, :, None, None] * base ** (-np.arange(0, d // 2) * 2.0 / d)
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def alibi_np(h, tq, tk):
  """-slope_h |i - j| with the standard 2^(-8 (h+1) / H) slopes (H a power of two). [1,H,Tq,Tk]."""
  slopes = np.array([2 ** (-8 * (i + 1) / h) for i in range(h)])
  return -slopes[None, :, None, None] * np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :])


def allowed_np(tq, tk, causal, kv_valid=None):
  """bool [B|1, 1, Tq, Tk]: causal structure and key padding, from their definitions."""
  a = np.ones((1, 1, tq, tk), bool)
  if causal:
    a = a & (np.arange(tk)[None, :] <= np.arange(tq)[:, None])[None, None]
  if kv_valid is not None:
    a = a & np.asarray(kv_valid)[:, None, None, :]
  return a


def oracle(name, hp, variables, x, context=None, causal=True, positional="rope", kv_valid=None):
  """The module's output rebuilt from its params with the full [Tq, Tk] weight matrix."""
  p = variables["params"]
  src = x if context is None else context
  q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"])
  k = jnp.einsum("btd,dhk->bthk", src, p["key"]["kernel"])
  v = jnp.einsum("btd,dhk->bthk", src, p["value"]["kernel"])
  _, tq, h, d = q.shape
  tk = k.shape[1]
  if positional == "rope":
    q, k = rope_np(q, np.arange(tq)), rope_np(k, np.arange(tk))
  rep = h // k.shape[2]
  k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
  bias = alibi_np(h, tq, tk) if positional == "alibi" else 0.0
  allowed = allowed_np(tq, tk, causal, kv_valid)
  if name == "cog":  # sign(s) exp(|s|) / sum exp(|s|) over visible keys
    e = jnp.where(allowed, jnp.exp(jnp.abs(s + bias)), 0.0)
    w = jnp.sign(s + bias) * e / e.sum(-1, keepdims=True)
  elif name == "sigmoid":  # sigmoid(s - log n), n = number of key positions
    n = hp.get("bias_n") or tk
    w = jnp.where(allowed, 1.0 / (1.0 + jnp.exp(-(s + bias - np.log(n)))), 0.0)
  elif name == "softmax_off_by_one":  # exp(s) / (exp(sink) + sum exp(s))
    sink = p["sinks"][None, :, None, None]
    e = jnp.where(allowed, jnp.exp(s + bias), 0.0)
    w = e / (jnp.exp(sink) + e.sum(-1, keepdims=True))
  elif name == "scalable_softmax":  # softmax(s_h log(n_i) * s + bias), n_i = visible keys
    n = allowed.sum(-1, keepdims=True)
    logits = p["ssmax_s"][None, :, None, None] * np.log(n) * s + bias
    e = jnp.where(allowed, jnp.exp(logits - jnp.max(jnp.where(allowed, logits, -1e30), -1, keepdims=True)), 0.0)
    w = e / e.sum(-1, keepdims=True)
  else:
    raise KeyError(name)
  y = jnp.einsum("bhqk,bkhd->bqhd", w, v)
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


def assert_matches_oracle(name, hp, x, context=None, **kw):
  """`name` equals this file's `oracle`, forward and gradients (`contract.check_against_oracle`)."""
  contract.check_against_oracle(oracle, name, hp, x, context, **kw)


# ---- oracle tests ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal,positional", [(True, "rope"), (False, "rope"), (True, "alibi")])
def test_oracle_self(name, causal, positional):
  x, _ = contract.make_inputs(length=12)
  assert_matches_oracle(name, VARIANTS[name], x, causal=causal, positional=positional)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [True, False])
def test_oracle_cross(name, causal):
  x, ctx = contract.make_inputs(length=8, context_len=8 if causal else 11)
  assert_matches_oracle(name, VARIANTS[name], x, ctx, causal=causal, positional="none")


@pytest.mark.parametrize("name", NAMES)
def test_oracle_key_padding_and_gqa(name):
  """The caller's mask is honoured (padding changes n for scalable_softmax), with GQA."""
  x, _ = contract.make_inputs(length=10)
  kv_valid = np.ones((2, 10), bool)
  kv_valid[0, 7:] = False
  kv_valid[1, :2] = False
  hp = {**VARIANTS[name], "num_heads": 4, "num_kv_heads": 2}
  assert_matches_oracle(name, hp, x, causal=False, kv_valid=kv_valid)


def test_sigmoid_bias_n_is_used():
  x, _ = contract.make_inputs(length=12)
  assert_matches_oracle("sigmoid", {"num_heads": 2, "bias_n": 100}, x)
  _, v, y0 = contract.init_apply("sigmoid", {"num_heads": 2}, x)
  _, _, y1 = contract.init_apply("sigmoid", {"num_heads": 2, "bias_n": 100}, x)
  assert float(jnp.max(jnp.abs(y0 - y1))) > 1e-3


def test_off_by_one_zero_sink_is_softmax_1():
  """sink = 0: weights are exp(s) / (1 + sum exp(s)) (Miller's softmax_1), rows sum < 1."""
  from attnlab.attention.ops.softmax.sink import sink_softmax_attention_reference
  kq, kk = jax.random.split(jax.random.key(3))
  q, k = jax.random.normal(kq, (1, 5, 2, 8)), jax.random.normal(kk, (1, 5, 2, 8))
  v = jnp.zeros((1, 5, 2, 8))
  _, w = sink_softmax_attention_reference(q, k, v, jnp.zeros(2), return_weights=True)
  s = np.einsum("bqhd,bkhd->bhqk", np.asarray(q, np.float64), np.asarray(k, np.float64)) / np.sqrt(8)
  ref = np.exp(s) / (1.0 + np.exp(s).sum(-1, keepdims=True))
  np.testing.assert_allclose(np.asarray(w), ref, atol=1e-6)
  assert float(w.sum(-1).max()) < 1.0


# ---- contract ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk", [1, 4])
def test_decode_matches_full(name, chunk):
  contract.check_decode_matches_full(name, VARIANTS[name], chunk=chunk)


@pytest.mark.parametrize("name", ["cog", "softmax_off_by_one"])
def test_unsupported_impl_raises(name):
  x, _ = contract.make_inputs(length=8)
  with pytest.raises(ValueError, match="no Pallas kernel is registered"):
    contract.init_apply(name, {"num_heads": 2, "impl": "pallas"}, x)


# ---- tiled XLA path == reference -----------------------------------------------------

def _qkv(tq=21, tk=21, hq=4, hkv=2, d=8, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (2, tq, hq, d)), jax.random.normal(ks[1], (2, tk, hkv, d)),
          jax.random.normal(ks[2], (2, tk, hkv, d)))


ROW_OPS = {
    "signed_softmax": lambda q, k, v, **kw: signed_softmax_attention(q, k, v, **kw),
    "sigmoid": lambda q, k, v, **kw: sigmoid_attention(q, k, v, **kw),
    "sink_softmax": lambda q, k, v, **kw: sink_softmax_attention(q, k, v, jnp.array([0.3, -0.2, 1.0, 0.0]), **kw),
}


@pytest.mark.parametrize("op", list(ROW_OPS))
@pytest.mark.parametrize("setting", ["causal_bias", "offset_padding"])
def test_query_tiled_equals_reference(op, setting):
  """impl="xla" (query tiles, padded last tile, per-tile mask offsets and bias rows) equals
  the materialised reference, forward and gradients."""
  q, k, v = _qkv()
  if setting == "causal_bias":
    kw = dict(mask=M.Causal(), bias=0.1 * jax.random.normal(jax.random.key(5), (1, 4, 21, 21)))
  else:
    valid = jnp.arange(21)[None] < jnp.array([[17], [21]])
    kw = dict(mask=M.Causal() & M.KeyPadding(valid), q_offset=0, bias=lambda qp, kp: -0.05 * jnp.abs(
        qp[:, None] - kp[None, :])[None, None] * jnp.ones((1, 4, 1, 1)))
  f = ROW_OPS[op]
  assert_same_fn(lambda q, k, v: f(q, k, v, impl="xla", block_q=8, **kw),
                 lambda q, k, v: f(q, k, v, impl="reference", **kw), q, k, v)


def assert_same_fn(fast, ref, *args, atol=1e-5):
  """fast(*args) == ref(*args), and so are the gradients of sum(sin(.))."""
  def both(f):
    def run(*a):
      y, vjp = jax.vjp(f, *a)
      return y, vjp(jnp.cos(y))
    return jax.jit(run)(*args)
  (y1, g1), (y2, g2) = both(fast), both(ref)
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), atol=atol)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


@pytest.mark.parametrize("mask", [None, "causal", "causal_padding"])
def test_scalable_softmax_scaled_query_form_equals_reference(mask):
  """SSMax as softmax_attention on queries scaled by s log n == the materialised SSMax,
  including a decode-style q_offset (n = position + 1)."""
  q, k, v = _qkv(tq=6, tk=21)
  valid = jnp.arange(21)[None] < jnp.array([[12], [21]])
  m = {None: None, "causal": M.Causal(), "causal_padding": M.Causal() & M.KeyPadding(valid)}[mask]
  s, b = jnp.array([0.5, 1.0, 0.2, 2.0]), jnp.array([0.1, 0.0, -0.3, 0.2])
  kw = dict(mask=m, q_offset=15)
  assert_same_fn(lambda q, k, v: scalable_softmax_attention(q, k, v, s, b=b, impl="auto", **kw),
                 lambda q, k, v: scalable_softmax_attention_reference(q, k, v, s, b=b, **kw), q, k, v)
