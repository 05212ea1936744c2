"""Attention zoo, part 3 (issue 18), second batch: baseconv (variants/conv.py), moa
(variants/moa.py), aggregated (variants/aggregated.py).

Oracles are written here from the papers' definitions in plain jnp / numpy (oracle_parts
for projections and RoPE), importing none of the modules' helpers:
* baseconv: y = (x W1 + b1) ⊙ (h * (x W2 + b2)), the implicit filter's MLP on positional
  features written out, the convolution as a direct sum over lags (a [T, T] Toeplitz
  matrix); T = 20 with key padding. The op's FFT convolution equals a numpy loop for
  filters shorter and longer than T. Canary: the oracle without the gate.
* moa: dense masked softmax, each head with its own window span from the rule
  span_h(L) = alpha_h + beta_h L, plus sinks; T = 20 in query tiles of 8 (the last
  partial), key padding. Canary: every head with head 0's span. Reduction: spans >= T is mha.
* aggregated: a dense [T, T + P] softmax over the centred window and the P pooled tokens
  (pool bounds, LayerNorm, GELU, cosine scores, relative bias written out); T = 20, tiles
  of 8, key padding emptying a pool. Canary: the oracle without the pooled keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build, masks as M
from attnlab.attention.ops.conv import causal_conv_fft
from tests.attention import contract
from tests.attention.oracle_parts import out_proj, proj, rope_bt
from tests.attention.test_zoo3 import _assert_bites

T = 20


def _padding(t=T):
  valid = np.ones((2, t), bool)
  valid[0, 13:] = False
  return valid


def _compare(name, module, variables, x, oracle, call_kw):
  """Module vs oracle, forward and d sum(sin y) / d(params, x). Returns the oracle output."""
  run = lambda v, x: module.apply(v, x, **call_kw)  # noqa: E731
  (y, g), (y_ref, g_ref) = contract.output_and_grad(run, variables, x), contract.output_and_grad(oracle, variables, x)
  contract.assert_oracle(name, "fwd", y, y_ref, atol=2e-5, rtol=1e-5)
  contract.assert_oracle(name, "grad", g, g_ref, atol=5e-5, rtol=1e-4)
  gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
  print(f"{name}: fwd err {float(jnp.max(jnp.abs(y - y_ref))):.2e}, grad err {gerr:.2e}")
  return y_ref


def _padded_oracle(name, hp, oracle):
  """`name` built with `hp` on random params vs `oracle(params, x, valid)` at T = 20 under key
  padding (`_padding`), fwd + grads. Returns (params, x, valid, oracle output)."""
  x, _ = contract.make_inputs(length=T)
  valid = _padding()
  module = build(name, **hp)
  variables = contract.random_params(module, x)
  y_ref = _compare(name, module, variables, x, lambda v, x: oracle(v["params"], x, valid),
                   {"mask": M.KeyPadding(jnp.asarray(valid))})
  return variables["params"], x, valid, y_ref


def _undeclared_patterns_raise(name, hp):
  """`contract.check_patterns` without its compiles, for variants whose oracle tests already
  compile every declared pattern: each undeclared pattern raises ValueError when traced."""
  declared = VARIANTS.get(name).patterns
  for pattern in ("causal-self", "noncausal-self", "causal-cross", "noncausal-cross"):
    if pattern not in declared:
      with pytest.raises(ValueError):
        contract._pattern_call(name, hp, pattern, 8, 12, compile=False)


# ---- baseconv ----------------------------------------------------------------------------
BASECONV = dict(filter_hidden=8, filter_bands=3, filter_scale=16.0)


def direct_causal_conv(u, h):
  """y_t = sum_{s <= t, s < L} h_s u_{t-s} as a Toeplitz matrix [T, T, D] (the definition)."""
  t = u.shape[1]
  lag = np.arange(t)[:, None] - np.arange(t)[None, :]
  ok = (lag >= 0) & (lag < h.shape[0])
  toeplitz = jnp.where(ok[..., None], h[np.clip(lag, 0, h.shape[0] - 1)], 0.0)
  return jnp.einsum("tsd,bsd->btd", toeplitz, u)


def baseconv_oracle(p, x, valid, hp, gated=True):
  """(x W1 + b1) ⊙ (h * (x W2 + b2)); padded tokens' u = 0; gated=False drops the gate."""
  lin = lambda name: x @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  u = jnp.where(valid[:, :, None], lin("conv_in"), 0.0)
  if hp.get("filter") == "explicit":
    h = p["filter"]
  else:  # Hyena's positional features [t/s, cos(2 pi f t/s), sin(2 pi f t/s)], f = 1e-4, 1, 2, ..
    s, t = hp["filter_scale"], np.arange(x.shape[1])[:, None]
    f = np.array([1e-4] + list(range(1, hp["filter_bands"])))[None]
    z = np.concatenate([t / s, np.cos(2 * np.pi * f * t / s), np.sin(2 * np.pi * f * t / s)], 1)
    hidden = jnp.maximum(z @ p["filter_in"]["kernel"] + p["filter_in"]["bias"], 0.0)
    h = hidden @ p["filter_out"]["kernel"] + p["filter_out"]["bias"]
  y = direct_causal_conv(u, h)
  return lin("proj") * y if gated else y


@pytest.mark.parametrize("hp", [BASECONV, dict(filter="explicit", filter_len=7)])
def test_baseconv_oracle_padding_and_canary(hp):
  """Fwd + grads vs the direct-sum oracle, T = 20, example 0's last 7 tokens padded;
  explicit filter of 7 taps (< T: lags beyond are zero). Canary: no gate."""
  p, x, valid, y_ref = _padded_oracle("baseconv", hp, lambda p, x, valid: baseconv_oracle(p, x, valid, hp))
  _assert_bites("baseconv", "no gate", y_ref, baseconv_oracle(p, x, valid, hp, gated=False))


@pytest.mark.parametrize("taps", [5, 20, 33])
def test_fft_conv_equals_direct_conv(taps):
  """The op's FFT convolution equals the direct sum (a numpy loop) for a filter shorter
  than, equal to and longer than T = 20 (the longer one is cut at T)."""
  rng = np.random.default_rng(taps)
  u, h = rng.standard_normal((2, T, 3)), rng.standard_normal((taps, 3))
  ref = np.zeros_like(u)
  for t in range(T):
    for s in range(min(t + 1, taps)):
      ref[:, t] += h[s] * u[:, t - s]
  got = np.asarray(causal_conv_fft(jnp.asarray(u, jnp.float32), jnp.asarray(h, jnp.float32)))
  np.testing.assert_allclose(got, ref, atol=2e-5)
  assert np.max(np.abs(ref - np.roll(ref, 1, axis=1))) > 1e-1  # not trivially constant in t


def test_baseconv_contract():
  contract.check_patterns("baseconv", BASECONV)
  for bad in (dict(filter="fourier"), dict(filter_scale=0.0), dict(filter_len=0)):
    with pytest.raises(ValueError):
      build("baseconv", **bad)


# ---- moa ---------------------------------------------------------------------------------
MOA = dict(num_heads=4, alphas=(3, 6), betas=(0.0, 0.25), num_sinks=2, block_size=8)


def moa_oracle(p, x, valid, hp, causal, spans=None):
  """Dense softmax per head over its own window (span_h = round(alpha_h + beta_h T),
  clipped to [1, T]; causal keys i - span + 1 .. i, non-causal centred) or a sink key."""
  b, t = x.shape[:2]
  a, be = hp["alphas"], hp["betas"]
  if spans is None:
    spans = [min(max(round(a[h % len(a)] + be[h % len(a)] * t), 1), t) for h in range(hp["num_heads"])]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  masks = []
  for s in spans:
    left, right = (s - 1, 0) if causal else (s // 2, s - 1 - s // 2)
    ok = ((i - j <= left) & (j - i <= right)) | (j < hp["num_sinks"])
    masks.append(ok & (j <= i) if causal else ok)
  allowed = np.stack(masks)[None] & valid[:, None, None, :]  # [B, H, T, T]
  pos = np.broadcast_to(np.arange(t), (b, t))
  q, k, v = rope_bt(proj(x, p, "query"), pos), rope_bt(proj(x, p, "key"), pos), proj(x, p, "value")
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  w = jax.nn.softmax(jnp.where(allowed, s, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)


def test_moa_oracle_padding_and_canary():
  """Causal: fwd + grads vs the dense per-head-window oracle (spans 3, 11, 3, 11 at T = 20:
  beta scales two heads with the length), 2 sinks, 3 query tiles of 8, key padding.
  Non-causal (centred windows): the forward on the same params (test budget: no second
  gradient compile). Canary: the oracle with every head at head 0's span."""
  assert build("moa", **MOA).spans(T).tolist() == [3, 11, 3, 11]
  p, x, valid, y_ref = _padded_oracle("moa", MOA, lambda p, x, valid: moa_oracle(p, x, valid, MOA, True))
  mask, variables = M.KeyPadding(jnp.asarray(valid)), {"params": p}
  _assert_bites("moa", "one span for all heads", y_ref, moa_oracle(p, x, valid, MOA, True, [3] * 4))
  nc = build("moa", **MOA, causal=False)
  y_nc, y_nc_ref = jax.jit(lambda v, x: nc.apply(v, x, mask=mask))(variables, x), moa_oracle(p, x, valid, MOA, False)
  contract.assert_oracle("moa", "fwd-noncausal", y_nc, y_nc_ref, atol=2e-5, rtol=1e-5)
  print(f"moa non-causal: fwd err {float(jnp.max(jnp.abs(y_nc - y_nc_ref))):.2e}")
  _assert_bites("moa", "non-causal, one span for all heads", y_nc_ref, moa_oracle(p, x, valid, MOA, False, [3] * 4))


def test_moa_reduces_to_mha_when_spans_cover_the_sequence():
  """alpha >= T on every head, no sinks: dense causal attention, equal to mha on the same params."""
  x, _ = contract.make_inputs(length=T)
  mha = build("mha", num_heads=4)
  variables = contract.random_params(mha, x)
  y_mha = jax.jit(mha.apply)(variables, x)
  moa = build("moa", num_heads=4, alphas=(T,), betas=(0.0,), block_size=8)
  np.testing.assert_allclose(np.asarray(jax.jit(moa.apply)(variables, x)), np.asarray(y_mha), atol=1e-5)


def test_moa_contract():
  """Decode equals the full pass; undeclared patterns raise (both declared ones, causal and
  non-causal self, are compiled by the oracle test); bad hyperparameters raise."""
  _undeclared_patterns_raise("moa", MOA)
  contract.check_decode_matches_full("moa", MOA, length=4)
  for bad in (dict(alphas=(1, 2), betas=(0.0,)), dict(betas=(-1.0, 0, 0, 0)), dict(block_size=0)):
    with pytest.raises(ValueError):
      module = build("moa", **bad)
      x, _ = contract.make_inputs(length=8)
      module.init(jax.random.key(0), x)


# ---- aggregated --------------------------------------------------------------------------
AGG = dict(num_heads=2, window=5, num_pools=3, block_size=8)


def aggregated_oracle(p, x, valid, hp, with_pools=True):
  """Dense [T, T + P] softmax: centred window keys (with rel_bias[h, j - i + w//2]) and P
  pooled keys (PyTorch adaptive-pool bounds floor(pT/P) .. ceil((p+1)T/P), mean over valid
  tokens, a pool without one masked; 1x1 projection, LayerNorm, exact GELU), cosine scores
  (normalize(q) + e) softplus(tau) log(w + P) . normalize(k). with_pools=False: window only."""
  b, t, _ = x.shape
  w, n_pool = hp["window"], hp["num_pools"]
  member = np.array([[(j >= (i * t) // n_pool) and (j < -(-((i + 1) * t) // n_pool)) for j in range(t)]
                     for i in range(n_pool)], np.float32)[None] * valid[:, None, :]  # [B, P, T]
  cnt = member.sum(-1, keepdims=True)
  pooled = jnp.einsum("bpt,btd->bpd", member, x) / np.maximum(cnt, 1)
  pooled = pooled @ p["pool_proj"]["kernel"] + p["pool_proj"]["bias"]
  mu, var = pooled.mean(-1, keepdims=True), pooled.var(-1, keepdims=True)
  pooled = (pooled - mu) / jnp.sqrt(var + 1e-6) * p["pool_norm"]["scale"] + p["pool_norm"]["bias"]
  pooled = jax.nn.gelu(pooled, approximate=False)
  keys = jnp.concatenate([x, pooled], 1)
  unit = lambda a: a / jnp.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
  q = (unit(proj(x, p, "query")) + p["query_embedding"]) * (jax.nn.softplus(p["temperature"]) * np.log(w + n_pool))[:, None]
  k, v = unit(proj(keys, p, "key")), proj(keys, p, "value")
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # [B, H, T, T + P]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  off = j - i + w // 2  # window offset index: keys i - w//2 .. i + w - 1 - w//2
  in_win = (off >= 0) & (off < w)
  rel = jnp.where(in_win, p["rel_bias"][:, np.clip(off, 0, w - 1)], 0.0)  # [H, T, T]
  s = s + jnp.concatenate([rel, jnp.zeros((hp["num_heads"], t, n_pool))], -1)[None]
  ok_fine = in_win[None] & valid[:, None, :]  # [B, T, T]
  ok_pool = np.broadcast_to((cnt[..., 0] > 0)[:, None, :] & with_pools, (b, t, n_pool))
  ok = np.concatenate([ok_fine, ok_pool], -1)[:, None]
  a = jax.nn.softmax(jnp.where(ok, s, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", a, v), p)


def test_aggregated_oracle_padding_and_canary():
  """Fwd + grads vs the dense oracle, T = 20, window 5, 3 pools (20 / 3: overlapping
  bounds), query tiles of 8 (the last partial, its window reading past T into the pooled
  slots), example 0's last 7 tokens padded (its last pool then holds no valid token).
  Canary: the oracle without the pooled keys (window only)."""
  p, x, valid, y_ref = _padded_oracle("aggregated", AGG, lambda p, x, valid: aggregated_oracle(p, x, valid, AGG))
  y_win = aggregated_oracle(p, x, valid, AGG, with_pools=False)
  _assert_bites("aggregated", "no pooled keys", y_ref[1], y_win[1])  # example 1: every row has a key


def test_aggregated_contract():
  """A finite gradient at the initial parameters when padding empties a pool (its key is
  then exactly 0: the normalisation's gradient there must not be NaN; the declared pattern,
  noncausal-self, runs here and in the oracle test); undeclared patterns raise; bad masks."""
  _undeclared_patterns_raise("aggregated", AGG)
  x, _ = contract.make_inputs(length=T)
  module, mask = build("aggregated", **AGG), M.KeyPadding(jnp.asarray(_padding()))
  g = jax.jit(jax.grad(lambda v, x: jnp.sum(module.apply(v, x, mask=mask) ** 2)))(contract.init_variables(module, x), x)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
  with pytest.raises(ValueError, match="KeyPadding"):
    x, _ = contract.make_inputs(length=8)
    module = build("aggregated", **AGG)
    module.apply(contract.random_params(module, x), x, mask=M.SlidingWindow(2))


# ---- pooled_cross -------------------------------------------------------------------------
POOLED = dict(num_heads=2, pool=3)


def pooled_cross_oracle(p, x, src, valid, pool, distractor=False):
  """Window means of x as queries (windows of `pool`, the last partial), dense softmax over
  the unpooled src keys (key padding `valid` [B, S]), each token reading its window's row.
  distractor: element b's keys and values extended by element (b - 1) mod B's (DCAL's PWCA)."""
  b, t, _ = x.shape
  starts = range(0, t, pool)
  pooled = jnp.stack([x[:, s:s + pool].mean(1) for s in starts], 1)
  q, k, v = proj(pooled, p, "query"), proj(src, p, "key"), proj(src, p, "value")
  if distractor:
    other = (np.arange(b) - 1) % b
    k, v = jnp.concatenate([k, k[other]], 1), jnp.concatenate([v, v[other]], 1)
    valid = np.concatenate([valid, valid[other]], 1)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  a = jax.nn.softmax(jnp.where(valid[:, None, None, :], s, -jnp.inf), -1)
  y = jnp.einsum("bhqk,bkhd->bqhd", a, v)
  return out_proj(y[:, np.arange(t) // pool], p)


def test_pooled_cross_oracle_padding_and_canary():
  """Cross-attention, T = 20 in windows of 3 (the last partial), S = 11 context keys with
  example 0's last 4 padded, pair_distractor on. A training call (PWCA) vs the dense oracle
  with the distractor keys, fwd + grads; an inference call vs the oracle without them (fwd).
  Canaries: unpooled queries (pool 1), and the oracle without the distractor keys."""
  hp = {**POOLED, "pair_distractor": True}
  x, ctx = contract.make_inputs(length=T, context_len=11)
  valid = np.ones((2, 11), bool)
  valid[0, 7:] = False
  module = build("pooled_cross", **hp)
  variables = contract.random_params(module, x, ctx)
  p, mask = variables["params"], M.KeyPadding(jnp.asarray(valid))
  call = lambda v, x: module.apply(v, x, context=ctx, mask=mask, deterministic=False)  # noqa: E731
  oracle = lambda v, x: pooled_cross_oracle(v["params"], x, ctx, valid, 3, distractor=True)  # noqa: E731
  (y, g), (y_ref, g_ref) = contract.output_and_grad(call, variables, x), contract.output_and_grad(oracle, variables, x)
  contract.assert_oracle("pooled_cross", "fwd", y, y_ref, atol=2e-5, rtol=1e-5)
  contract.assert_oracle("pooled_cross", "grad", g, g_ref, atol=5e-5, rtol=1e-4)
  gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
  print(f"pooled_cross (training, PWCA): fwd err {float(jnp.max(jnp.abs(y - y_ref))):.2e}, grad err {gerr:.2e}")
  y_inf = jax.jit(lambda v, x: module.apply(v, x, context=ctx, mask=mask))(variables, x)
  y_plain = pooled_cross_oracle(p, x, ctx, valid, 3)
  contract.assert_oracle("pooled_cross", "fwd-inference", y_inf, y_plain, atol=2e-5, rtol=1e-5)
  print(f"pooled_cross (inference): fwd err {float(jnp.max(jnp.abs(y_inf - y_plain))):.2e}")
  _assert_bites("pooled_cross", "queries unpooled", y_plain, pooled_cross_oracle(p, x, ctx, valid, 1))
  _assert_bites("pooled_cross", "no distractor", y_ref, y_plain)


def test_pooled_cross_reductions():
  """pool = 1 is plain cross-attention (mha, no positional encoding, same params); with
  pair_distractor, an inference call (deterministic) equals the layer without it, self-attention."""
  x, ctx = contract.make_inputs(length=T, context_len=11)
  mha = build("mha", num_heads=2, causal=False, positional="none")
  variables = contract.random_params(mha, x, ctx)
  one = build("pooled_cross", num_heads=2, pool=1)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda v, x: one.apply(v, x, context=ctx))(variables, x)),
                             np.asarray(jax.jit(lambda v, x: mha.apply(v, x, context=ctx))(variables, x)), atol=1e-5)
  plain, pwca = build("pooled_cross", **POOLED), build("pooled_cross", **POOLED, pair_distractor=True)
  np.testing.assert_allclose(np.asarray(jax.jit(pwca.apply)(variables, x)), np.asarray(jax.jit(plain.apply)(variables, x)),
                             atol=1e-6)


def test_pooled_cross_contract():
  contract.check_patterns("pooled_cross", POOLED)
  for bad in (dict(pool=0), dict(positional="rope")):
    with pytest.raises(ValueError):
      module = build("pooled_cross", **bad)
      x, _ = contract.make_inputs(length=8)
      module.init(jax.random.key(0), x)
