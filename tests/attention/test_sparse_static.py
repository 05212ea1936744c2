"""Static sparse variants: block_local, dilated_window, longformer, bigbird, strided,
power_attention, s2_attention.

The oracle for each is written here from the paper's definition, one (head, query, key)
triple at a time in plain Python, independent of the variants' predicates and key
tables; attention is then computed densely from the module's own parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build, masks
from tests.attention import contract

H = 2
T = 37  # not a multiple of any block size below: exercises padding

# name -> list of (id, hyperparameters); the first entry is the variant's main test config.
CONFIGS = {
    "block_local": [("b8", dict(block_size=8))],
    "dilated_window": [("w3", dict(window=3, dilations=(1, 3))),
                       ("w2_cycle", dict(window=2, dilations=(2, 5, 7), num_heads=4))],
    "longformer": [("first2", dict(window=4, num_global=2, block_size=8)),
                   ("indices", dict(window=3, global_indices=(5, 20), block_size=4))],
    "bigbird": [("b4", dict(block_size=4, window_blocks=2, num_global_blocks=1, num_random_blocks=2)),
                ("b3_g2", dict(block_size=3, window_blocks=3, num_global_blocks=2, num_random_blocks=3,
                               seed=7))],
    "strided": [("strided", dict(pattern="strided", stride=5)),
                ("fixed", dict(pattern="fixed", stride=6, summary=2)),
                ("strided_merged", dict(pattern="strided", stride=4, head_split="merged")),
                ("fixed_merged", dict(pattern="fixed", stride=5, summary=1, head_split="merged"))],
    "power_attention": [("tok", dict(window=3)), ("blk2", dict(window=2, block_size=2))],
    "s2_attention": [("b4", dict(block_size=4, local_blocks=2)),
                     ("v4", dict(block_size=3, local_blocks=1, vert_stride=4)),
                     ("homo", dict(block_size=4, local_blocks=2, vert_stride=3, homo_head=True))],
}
NAMES = list(CONFIGS)
ALL = [(n, cid, hp) for n, cfgs in CONFIGS.items() for cid, hp in cfgs]
ALL_IDS = [f"{n}-{cid}" for n, cid, _ in ALL]
MAIN = {n: cfgs[0][1] for n, cfgs in CONFIGS.items()}


# ---- the oracle: patterns from the papers' definitions ------------------------------------


def _rope(x, pos, base=10000.0):
  """RoFormer's rotation (Su et al., 2021) in the half-split layout, as complex numbers:
  z_i = x_i + 1j x_{i + D/2} is multiplied by exp(1j pos base^(-2i/D)). x [B, T, H, D], pos [B, T]."""
  d = x.shape[-1] // 2
  z = jax.lax.complex(x[..., :d], x[..., d:])
  ang = pos[:, :, None, None] * base ** (-2.0 * np.arange(d) / (2 * d))
  z = z * jnp.exp(1j * ang.astype(np.float32))
  return jnp.concatenate([jnp.real(z), jnp.imag(z)], -1)


def _alibi_slopes(n):
  """ALiBi slopes for n a power of two (Press et al., 2022, Sec. 3): 2^(-8 h / n), h = 1..n."""
  assert _pow2(n), n
  return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)


def _pow2(d):
  return d > 0 and (d & (d - 1)) == 0


def _in_window(d, w, causal):
  """Distance d = query - key inside a window of w (the query's own included): causal the
  last w (0 <= d <= w - 1); non-causal centred, floor(w/2) before, w - 1 - floor(w/2) after."""
  before, after = (w - 1, 0) if causal else (w // 2, w - 1 - w // 2)
  return -after <= d <= before


def oracle_allowed(name, hp, h, i, j, nh, t, causal, rand=None):
  """Whether query i may attend to key j in head h (of nh), sequence length t.

  rand: bigbird's random key blocks as data, int [nh, num_q_blocks, r] (-1 = none), read
  from the module (`BigBirdAttention.random_blocks`), never recomputed here: the draw is
  the module's decision; its definition is tested in test_mechanism_helpers.py."""
  if causal and j > i:
    return False
  d = i - j
  if name == "block_local":
    return i // hp["block_size"] == j // hp["block_size"]
  if name == "dilated_window":
    r = hp["dilations"][h % len(hp["dilations"])]
    return d % r == 0 and _in_window(d // r, hp["window"], causal)
  if name == "longformer":
    g = set(hp.get("global_indices") or range(hp.get("num_global", 1)))
    return _in_window(d, hp["window"], causal) or i in g or j in g
  if name == "bigbird":
    b, w, ng = hp["block_size"], hp["window_blocks"], hp["num_global_blocks"]
    bi, bj = i // b, j // b
    return _in_window(bi - bj, w, causal) or bi < ng or bj < ng or bj in set(rand[h, bi].tolist())
  if name == "strided":
    l, split = hp["stride"], hp.get("head_split", "split")
    if hp["pattern"] == "strided":
      a1 = abs(d) <= l  # A(1)_i = {max(0, i - l), ..., i} (mirrored when non-causal)
      a2 = d % l == 0   # A(2)_i = {j : (i - j) mod l = 0}
    else:
      c = hp.get("summary", 1)
      a1 = i // l == j // l  # A(1)_i = {j : floor(j / l) = floor(i / l)}
      a2 = j % l >= l - c    # A(2)_i = {j : j mod l in {l - c, ..., l - 1}}
    if split == "merged":
      return a1 or a2
    return a1 if h < -(-nh // 2) else a2
  if name == "power_attention":
    b = hp.get("block_size", 1)
    dd = i // b - j // b
    return _in_window(dd, hp["window"], causal) or _pow2(abs(dd))
  if name == "s2_attention":
    b, nl = hp["block_size"], hp["local_blocks"]
    v = hp.get("vert_stride", 0) or nh
    off = 0 if hp.get("homo_head", False) else h * max(1, v // nh)
    bi, bj = i // b, j // b
    return _in_window(bi - bj, nl, causal) or (bj + off + 1) % v == 0
  raise KeyError(name)


def oracle_mask(name, hp, nh, t, causal, rand=None):
  """bool [nh, t, t], built pair by pair (rand: see oracle_allowed)."""
  out = np.zeros((nh, t, t), bool)
  for h in range(nh):
    for i in range(t):
      for j in range(t):
        out[h, i, j] = oracle_allowed(name, hp, h, i, j, nh, t, causal, rand)
  return out


def module_random_blocks(name, module, nh, t):
  """bigbird's random-block table as data, through the module's public accessor; None
  for every other variant."""
  return np.asarray(module.random_blocks(np.arange(nh), t)) if name == "bigbird" else None


def oracle_apply(params, x, allowed, *, positional="rope", key_valid=None):
  """Dense masked softmax attention from the module's own parameters.

  params: unboxed {query, key, value, out: {kernel}}; allowed bool [H, T, T];
  key_valid bool [B, T] or None.
  """
  q = jnp.einsum("btd,dhk->bthk", x, params["query"]["kernel"])
  k = jnp.einsum("btd,dhk->bthk", x, params["key"]["kernel"])
  v = jnp.einsum("btd,dhk->bthk", x, params["value"]["kernel"])
  b, t, nh, hd = q.shape
  rep = nh // k.shape[2]
  k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  if positional == "rope":
    q, k = _rope(q, pos), _rope(k, pos)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
  if positional == "alibi":
    idx = np.arange(t)
    s = s - _alibi_slopes(nh)[None, :, None, None] * np.abs(idx[:, None] - idx[None, :])
  allow = jnp.asarray(allowed)[None]
  if key_valid is not None:
    allow = allow & key_valid[:, None, None, :]
  s = jnp.where(allow, s, -1e30)
  w = jax.nn.softmax(s, axis=-1) * jnp.any(allow, -1, keepdims=True)
  o = jnp.einsum("bhqk,bkhd->bqhd", w, v)
  return jnp.einsum("bqhd,hdm->bqm", o, params["out"]["kernel"])


def _setup(name, hp, causal, length=T, **extra):
  hp = {"num_heads": H, **hp, "causal": causal, **extra}
  x, _ = contract.make_inputs(length=length)
  module = build(name, **hp)
  params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(1), x)["params"])
  return hp, x, module, params


def _max_err(a, b):
  """Largest |a - b| over the leaves, each relative to max(1, max |b|) of its leaf
  (gradient entries reach ~60 here, so fp32 summation-order differences exceed 1e-5
  in absolute terms)."""
  return max(float(jnp.max(jnp.abs(u - w)) / max(1.0, float(jnp.max(jnp.abs(w)))))
             for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---- oracle tests -------------------------------------------------------------------------


def _value_and_grads(fn, params, x):
  """(y, d sum(sin y) / d(params, x)) in one compiled call; fn(params, x) -> y."""
  def loss(p, x):
    y = fn(p, x)
    return jnp.sum(jnp.sin(y)), y
  (_, y), g = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
  return y, g


# Main configs in both directions; the extra configs causal only (time budget). The
# main causal case also runs ALiBi, one shared kv head (GQA/MQA), an extra KeyPadding
# mask and query_chunk=8 (several rematerialised chunks), all against the oracle.
ORACLE_CASES = [pytest.param(n, cid, hp, causal, k == 0 and causal,
                             id=f"{n}-{cid}-{'causal' if causal else 'noncausal'}")
                for n, cfgs in CONFIGS.items() for k, (cid, hp) in enumerate(cfgs)
                for causal in ((True, False) if k == 0 else (True,))]


@pytest.mark.parametrize("name,cid,hp,causal,extras", ORACLE_CASES)
def test_oracle_forward_and_grad(name, cid, hp, causal, extras):
  more = dict(positional="alibi", num_kv_heads=1, query_chunk=8) if extras else {}
  hp, x, module, params = _setup(name, hp, causal, **more)
  allowed = oracle_mask(name, hp, hp["num_heads"], T, causal, module_random_blocks(name, module, hp["num_heads"], T))
  assert 0 < allowed.mean() < 1, "pattern must be non-trivial at this length"
  valid = None
  if extras:
    valid = jnp.asarray(np.arange(T)[None, :] % 7 != 3).repeat(2, 0).at[1, 30:].set(False)
  pad = None if valid is None else masks.KeyPadding(valid)
  y, g = _value_and_grads(lambda p, x: module.apply({"params": p}, x, mask=pad), params, x)
  y_ref, g_ref = _value_and_grads(
      lambda p, x: oracle_apply(p, x, allowed, positional=hp.get("positional", "rope"),
                                key_valid=valid), params, x)
  contract.assert_oracle(name, "fwd", y, y_ref, atol=1e-5, rtol=1e-5)
  err = _max_err(g, g_ref)
  print(f"{name}-{cid} causal={causal} extras={extras}: fwd {float(jnp.max(jnp.abs(y - y_ref))):.2e}"
        f" grad(rel) {err:.2e}")
  # The bound is 1e-5 relative to each leaf's scale max(1, max |b|) (see _max_err): one
  # comparison (and record) per leaf with that leaf's absolute tolerance.
  for u, w in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    contract.assert_oracle(name, "grad", u, w, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(w)))))


# Canaries: one wrong pattern per family, each a plausible slip (the window one block or
# one token off, the random blocks dropped, all heads on one shard, every rate shifted).
# The module's output must differ from the oracle of the wrong pattern by far more than
# the oracle tolerance (1e-5), or the oracle test above could not tell them apart.
# (Three of the seven variants: the oracle is one function; CI time matters.)
CANARIES = {
    "longformer": (MAIN["longformer"], dict(MAIN["longformer"], window=5)),
    "bigbird": (MAIN["bigbird"], {}),  # the module's random-block table replaced by none
    "s2_attention": (MAIN["s2_attention"], dict(MAIN["s2_attention"], homo_head=True)),
}


@pytest.mark.parametrize("name", list(CANARIES))
def test_oracle_bites(name):
  """The oracle of a slightly wrong pattern rejects the module (forward)."""
  right, wrong = CANARIES[name]
  hp, x, module, params = _setup(name, right, True)
  nh = hp["num_heads"]
  rand = module_random_blocks(name, module, nh, T)
  good = oracle_mask(name, hp, nh, T, True, rand)
  bad = oracle_mask(name, {**hp, **wrong}, nh, T, True, None if rand is None else np.full_like(rand, -1))
  assert (good != bad).any()
  y = jax.jit(lambda p: module.apply({"params": p}, x))(params)
  ok, off = (float(jnp.max(jnp.abs(y - oracle_apply(params, x, m)))) for m in (good, bad))
  print(f"{name}: |module - oracle| {ok:.1e}, |module - wrong-pattern oracle| {off:.1e}")
  assert ok < 1e-5 and off > 1e-2, (ok, off)


@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_single_chunk_and_reference(name):
  """Several rematerialised query chunks == one chunk == the materialised-mask impl."""
  hp, x, module, params = _setup(name, MAIN[name], True, length=50, query_chunk=8)
  one = build(name, **{**hp, "query_chunk": 4096})
  ref = build(name, **{**hp, "impl": "reference"})
  ys = jax.jit(lambda p: [m.apply({"params": p}, x) for m in (module, one, ref)])(params)
  np.testing.assert_allclose(np.asarray(ys[0]), np.asarray(ys[1]), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ys[0]), np.asarray(ys[2]), atol=1e-5, rtol=1e-5)


# ---- the shared contract --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_contract_patterns(name):
  contract.check_patterns(name, {"num_heads": H, **MAIN[name]}, length=T)


@pytest.mark.parametrize("name", NAMES)
def test_contract_decode(name):
  assert "decode" in VARIANTS.get(name).patterns
  contract.check_decode_matches_full(name, {"num_heads": H, **MAIN[name]}, length=14)


@pytest.mark.parametrize("name", NAMES)
def test_contract_decode_three_tokens_per_step(name):
  contract.check_decode_matches_full(name, {"num_heads": H, **MAIN[name]}, length=14, chunk=3)


@pytest.mark.parametrize("name", ["block_local", "dilated_window"])
def test_decode_step_cost_does_not_grow_with_the_cache(name):
  """A decode step gathers its block's key table, not the whole cache: its FLOPs at a
  4096-slot cache stay within 1.5x of those at 512 (attending the cache would be 8x)."""
  short, long = (contract.decode_step_flops(name, {"num_heads": H, **MAIN[name]}, s) for s in (512, 4096))
  print(f"{name}: decode step {short:.3g} FLOPs @512 -> {long:.3g} @4096")
  assert long < 1.5 * short, (short, long)


@pytest.mark.parametrize("name", NAMES)
def test_contract_grads_finite(name):
  contract.check_grads_finite(name, {"num_heads": H, **MAIN[name]}, length=T)


# ---- variant-specific checks ----------------------------------------------------------------


def test_power_attention_receptive_field_doubles():
  """Composing the causal pattern over L layers reaches every distance < 2^L (with a
  window of 1: self only), the paper's exponential receptive field."""
  t = 64
  a = oracle_mask("power_attention", dict(window=1), 1, t, True)[0].astype(int)
  reach = np.eye(t, dtype=int)
  for layer in range(1, 6):
    reach = np.minimum(1, a @ reach)
    assert reach[t - 1, t - 2 ** layer:].all(), "every distance < 2^L is reached in L layers"
    assert not reach[t - 1, t - 2 ** (layer + 1)], "2^(L+1) - 1 needs L + 1 hops"


@pytest.mark.parametrize("name,bad", [
    ("block_local", dict(block_size=0)),
    ("dilated_window", dict(dilations=())),
    ("dilated_window", dict(dilations=(1, 0))),
    ("longformer", dict(global_indices=(99,))),
    ("bigbird", dict(num_random_blocks=-1)),
    ("bigbird", dict(window_blocks=0)),
    ("longformer", dict(window=0)),
    ("strided", dict(pattern="diagonal")),
    ("strided", dict(stride=4, summary=5)),
    ("strided", dict(num_heads=1)),
    ("power_attention", dict(window=0)),
    ("s2_attention", dict(local_blocks=0)),
    ("block_local", dict(impl="pallas")),
    ("block_local", dict(positional="learned")),
])
def test_invalid_hyperparameters_raise(name, bad):
  x, _ = contract.make_inputs(length=16)
  with pytest.raises(ValueError):
    build(name, **{"num_heads": H, **bad}).init(jax.random.key(0), x)
