"""Oracle and contract tests for the routed family: lsh, moba, topk, duo (routing: test_routing.py).

Oracle rule for routed variants: the routing decision (cluster ids, hash buckets, selected
blocks, top-k sets) is recomputed here in numpy from the module's own params/variables,
turned into a dense [Tq, Tk] boolean mask, and the attention is the obvious masked
softmax over the full score matrix. That checks the sort / gather / chunk code of the
efficient path, forward and gradients (the mask is piecewise constant in the inputs, so
it is computed once from concrete values and held fixed under jax.grad).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build, masks as M
from attnlab.attention.ops.sparse import block_select as BS
from attnlab.attention.ops.sparse import routed as R
from attnlab.attention.variants import routed
from tests.attention import contract
from tests.attention.oracle_parts import FWD_TOL, GRAD_TOL, out_proj, proj

VARIANTS = {
    "lsh": dict(num_heads=2, num_buckets=4, chunk_size=4, num_hashes=2),
    "moba": dict(num_heads=2, block_size=4, top_k=2),
    "topk": dict(num_heads=2, top_k=5, block_k=8),
    "duo": dict(num_heads=2, window=3, num_sinks=2, alpha_init=0.6),
}


# ---- independent helpers (plain numpy / jnp) ---------------------------------------------


def rope(x, pos, base=10000.0):
  """RoPE, half-split pairs (i, i + D/2) rotated by pos * base^(-2i/D). x [B,T,H,D], pos [T]."""
  d = x.shape[-1]
  ang = np.asarray(pos, np.float64)[:, None] * base ** (-np.arange(d // 2) * 2.0 / d)
  cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def dense_attention(q, k, v, allowed, self_score=None):
  """softmax over allowed [B|1, H|1, Tq, Tk] of q k^T / sqrt(d); empty rows -> 0.
  Returns (out [B, Tq, H, Dv], lse [B, H, Tq])."""
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if self_score is not None:
    s = jnp.where(np.eye(s.shape[-1], dtype=bool), self_score, s)
  allowed = np.broadcast_to(allowed, s.shape)
  row = allowed.any(-1, keepdims=True)
  s = jnp.where(allowed, s, -1e30)
  lse = jax.scipy.special.logsumexp(s, axis=-1)
  w = jax.nn.softmax(s, axis=-1) * row
  return jnp.einsum("bhqk,bkhd->bqhd", w, v), lse


def causal_np(tq, tk, q_offset=0):
  return np.arange(tk)[None, :] <= (np.arange(tq) + q_offset)[:, None]


def check_against_oracle(name, module, variables, x, oracle_fn, context=None, mask=None):
  """Forward and d(sum sin(y))/d(params, x) of module (variant `name`, called with the extra
  `mask`) vs oracle_fn(params, x, context). Returns the module's output y."""
  y = module.apply(variables, x, context=context, mask=mask)
  ref = oracle_fn(variables["params"], x, context)
  contract.assert_oracle(name, "fwd", y, ref, **FWD_TOL)
  rest = {k: v for k, v in variables.items() if k != "params"}
  loss_mod = lambda p, x: jnp.sum(jnp.sin(module.apply({"params": p, **rest}, x, context=context, mask=mask)))  # noqa: E731
  loss_ref = lambda p, x: jnp.sum(jnp.sin(oracle_fn(p, x, context)))  # noqa: E731
  g_mod = jax.jit(jax.grad(loss_mod, argnums=(0, 1)))(variables["params"], x)
  g_ref = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(variables["params"], x)
  err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(g_mod), jax.tree.leaves(g_ref)))
  contract.assert_oracle(name, "grad", g_mod, g_ref, **GRAD_TOL)
  print(f"oracle max abs err: fwd {float(np.max(np.abs(np.asarray(y) - np.asarray(ref)))):.2e} grad {err:.2e}")
  return y


def assert_bites(name, y, wrong_ref):
  """Canary: the oracle of a slightly wrong decision (wrong_ref, same params) differs from
  the module's output y by far more than the oracle tolerance."""
  off = float(np.max(np.abs(np.asarray(y) - np.asarray(wrong_ref))))
  print(f"{name}: |module - wrong-decision oracle| {off:.1e}")
  assert off > 50 * FWD_TOL["atol"], off


# ---- lsh ------------------------------------------------------------------------------------


def lsh_oracle_parts(qk, rotations, chunk, causal):
  """Buckets argmax([xR, -xR]) and per-round masks [B, H, R, T, T]."""
  qk, rot = np.asarray(qk), np.asarray(rotations)
  proj_ = np.einsum("bthd,hrdk->bhrtk", qk, rot)
  buckets = np.argmax(np.concatenate([proj_, -proj_], -1), -1)  # [B, H, R, T]
  t = qk.shape[1]
  nc = -(-t // chunk)
  ch = np.argsort(np.argsort(buckets, axis=-1, kind="stable"), axis=-1) // chunk
  ci, cj = ch[..., :, None], ch[..., None, :]
  ok = (ci == cj) | ((ci - 1) % nc == cj)
  return buckets, (ok & causal_np(t, t)) if causal else ok


@pytest.mark.parametrize("causal,length,chunk", [(True, 14, 4), (False, 12, 16)])
def test_lsh_oracle(causal, length, chunk):
  hp = {**VARIANTS["lsh"], "causal": causal, "chunk_size": chunk}
  x, _ = contract.make_inputs(length=length)
  module, variables, _ = contract.init_apply("lsh", hp, x)
  _, inter = module.apply(variables, x, mutable=["intermediates"])
  rot, sown = inter["intermediates"]["rotations"][0], inter["intermediates"]["buckets"][0]
  buckets, allowed = lsh_oracle_parts(proj(x, variables["params"], "qk"), rot, chunk, causal)
  np.testing.assert_array_equal(np.asarray(sown), buckets)

  def oracle(p, x, ctx, allowed=allowed):
    qk, v = proj(x, p, "qk"), proj(x, p, "value")
    kn = qk / jnp.linalg.norm(qk, axis=-1, keepdims=True)
    outs, lses = zip(*[dense_attention(qk, kn, v, allowed[:, :, r], self_score=-1e5)
                       for r in range(allowed.shape[2])])
    w = jax.nn.softmax(jnp.stack(lses, 0), axis=0)  # round weights from each round's logsumexp
    return out_proj(sum(w[r].transpose(0, 2, 1)[..., None] * outs[r] for r in range(len(outs))), p)

  y = check_against_oracle("lsh", module, variables, x, oracle)
  if chunk < length:  # canary: chunks one position longer than the module's
    assert_bites("lsh", y, oracle(variables["params"], x, None,
                                  lsh_oracle_parts(proj(x, variables["params"], "qk"), rot, chunk + 1, causal)[1]))


def test_lsh_rotations_seeded_and_self_only_when_alone():
  x, _ = contract.make_inputs(length=16)
  module, variables, y = contract.init_apply("lsh", VARIANTS["lsh"], x)
  y2 = jax.jit(build("lsh", **VARIANTS["lsh"]).apply)(variables, x)  # jitted, as init_apply's y
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))  # same seed: same hashes, same output
  get = lambda m, v: m.apply(v, x, mutable=["intermediates"])[1]["intermediates"]["rotations"][0]  # noqa: E731
  other = build("lsh", **{**VARIANTS["lsh"], "seed": 1})
  assert not np.allclose(np.asarray(get(module, variables)), np.asarray(get(other, variables)))
  # Causal query 0 can only see itself: its output is exactly its value (the -1e5 self
  # score only loses to other keys, never to nothing).
  qk = jax.random.normal(jax.random.key(1), (1, 8, 1, 4))
  v = jax.random.normal(jax.random.key(2), (1, 8, 1, 4))
  buckets = R.lsh_hash(qk, R.lsh_rotations(0, 1, 2, 4, 4))
  o = R.lsh_attention(qk, v, buckets, chunk_size=2, causal=True)
  np.testing.assert_allclose(np.asarray(o[:, 0]), np.asarray(v[:, 0]), atol=1e-6)


# ---- moba ------------------------------------------------------------------------------------


def moba_allowed(q, k, block, top_k):
  """Own block always, then the top_k - 1 past blocks by q . mean(block keys); causal."""
  q, k = np.asarray(q), np.asarray(k)
  b, t, h, _ = q.shape
  nb = -(-t // block)
  means = np.stack([k[:, j * block:(j + 1) * block].mean(1) for j in range(nb)], 1)  # [B, nb, H, D]
  gate = np.einsum("bqhd,bnhd->bhqn", q, means)
  ok = np.zeros((b, h, t, t), bool)
  for i in range(t):
    own = i // block
    for bi in range(b):
      for hi in range(h):
        past = sorted(range(own), key=lambda j: -gate[bi, hi, i, j])[: top_k - 1]
        for j in past + [own]:
          ok[bi, hi, i, j * block:(j + 1) * block] = True
  return ok & causal_np(t, t)


@pytest.mark.parametrize("length,top_k,positional", [(14, 2, "rope"), (12, 8, "none")])
def test_moba_oracle(length, top_k, positional):
  hp = {**VARIANTS["moba"], "top_k": top_k, "positional": positional, "q_chunk": 4}
  x, _ = contract.make_inputs(length=length)
  module, variables, _ = contract.init_apply("moba", hp, x)
  pos = np.arange(length)
  pe = (lambda a: rope(a, pos)) if positional == "rope" else (lambda a: a)
  p0 = variables["params"]
  allowed = moba_allowed(pe(proj(x, p0, "query")), pe(proj(x, p0, "key")), hp["block_size"], top_k)
  if top_k >= -(-length // hp["block_size"]):  # reduction: every past block selected -> causal attention
    assert (allowed == causal_np(length, length)).all()

  def oracle(p, x, ctx, allowed=allowed):
    return out_proj(dense_attention(pe(proj(x, p, "query")), pe(proj(x, p, "key")), proj(x, p, "value"),
                                    allowed)[0], p)

  y = check_against_oracle("moba", module, variables, x, oracle)
  if top_k < -(-length // hp["block_size"]):  # canary: one selected block fewer
    wrong = moba_allowed(pe(proj(x, p0, "query")), pe(proj(x, p0, "key")), hp["block_size"], top_k - 1)
    assert_bites("moba", y, oracle(p0, x, None, wrong))


# ---- topk -------------------------------------------------------------------------------------


def topk_allowed(q, k, top_k, base):
  """Entries whose score is >= the row's top_k-th largest allowed score."""
  s = np.einsum("bqhd,bkhd->bhqk", np.asarray(q), np.asarray(k))
  s = np.where(base, s, -np.inf)
  kth = -np.sort(-s, axis=-1)[..., min(top_k, s.shape[-1]) - 1:min(top_k, s.shape[-1])]
  return base & (s >= kth) & np.isfinite(s)


@pytest.mark.parametrize("causal,context_len,top_k,padded", [
    (True, None, 5, False), (False, None, 3, True), (False, 27, 4, False)])
def test_topk_oracle(causal, context_len, top_k, padded):
  """Forward and gradients against the oracle at 29 queries and 29 (or 27) keys: four key
  tiles of block_k = 8, the last one partial (topk has no query tile: all queries at once);
  the padded case masks example 0's last 9 keys (more than a tile)."""
  hp = {**VARIANTS["topk"], "causal": causal, "top_k": top_k}
  length = 29
  x, ctx = contract.make_inputs(length=length, context_len=context_len)
  module, variables, _ = contract.init_apply("topk", hp, x, ctx)
  tk = length if ctx is None else context_len
  assert -(-tk // hp["block_k"]) >= 3 and tk % hp["block_k"]
  valid = np.ones((2, tk), bool)
  if padded:
    valid[0, 20:] = False
  mask = M.KeyPadding(jnp.asarray(valid)) if padded else None
  qpe = lambda a: rope(a, np.arange(length))  # noqa: E731
  kpe = lambda a: rope(a, np.arange(tk))  # noqa: E731
  base = (causal_np(length, tk) if causal else np.ones((length, tk), bool))[None, None] & valid[:, None, None]
  p0 = variables["params"]
  src = x if ctx is None else ctx
  allowed = topk_allowed(qpe(proj(x, p0, "query")), kpe(proj(src, p0, "key")), top_k, base)
  assert (allowed.sum(-1) == np.minimum(top_k, base.sum(-1))).all()
  if top_k >= length:  # reduction: k >= T keeps every allowed key -> plain causal attention
    assert (allowed == base).all()

  def oracle(p, x, ctx, allowed=allowed):
    src = x if ctx is None else ctx
    return out_proj(dense_attention(qpe(proj(x, p, "query")), kpe(proj(src, p, "key")), proj(src, p, "value"),
                                    allowed)[0], p)

  y = check_against_oracle("topk", module, variables, x, oracle, ctx, mask=mask)
  # Canary: the padded case's oracle without the padding; the others keep one key fewer.
  wrong_base = base | ~valid[:, None, None] if padded else base
  wrong = topk_allowed(qpe(proj(x, p0, "query")), kpe(proj(src, p0, "key")), top_k - (not padded), wrong_base)
  assert_bites("topk", y, oracle(p0, x, ctx, wrong))


# ---- duo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,threshold", [((0.3, 0.9), -1.0), ((0.3, 0.9), 0.5), ((1.4, -0.2), -1.0)])
def test_duo_oracle(alpha, threshold):
  hp = {**VARIANTS["duo"], "hard_assign_threshold": threshold}
  x, _ = contract.make_inputs(length=16)
  module, variables, _ = contract.init_apply("duo", hp, x)
  if alpha is not None:
    variables = {"params": {**variables["params"], "alpha": jnp.asarray(alpha, jnp.float32)}}
  t = x.shape[1]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  streaming = lambda w: (j <= i) & ((j >= i - w + 1) | (j < hp["num_sinks"]))  # noqa: E731  (w keys incl. itself)
  stream = streaming(hp["window"])
  pos = np.arange(t)

  def oracle(p, x, ctx, stream=stream):
    q, k, v = rope(proj(x, p, "query"), pos), rope(proj(x, p, "key"), pos), proj(x, p, "value")
    a = jnp.clip(p["alpha"], 0, 1)
    if threshold >= 0:
      a = (a >= threshold).astype(jnp.float32)
    full, strm = dense_attention(q, k, v, causal_np(t, t))[0], dense_attention(q, k, v, stream)[0]
    return out_proj(a[:, None] * full + (1 - a[:, None]) * strm, p)

  y = check_against_oracle("duo", module, variables, x, oracle)
  if threshold < 0 and alpha[0] < 1:  # canary: a streaming window one key wider
    assert_bites("duo", y, oracle(variables["params"], x, None, streaming(hp["window"] + 1)))


@pytest.mark.parametrize("alpha,reference", [(1.0, "mha"), (0.0, "sink_window")])
def test_duo_reduces_to_full_and_streaming(alpha, reference):
  hp = {**VARIANTS["duo"], "alpha_init": alpha}
  x, _ = contract.make_inputs(length=16)
  _, variables, y = contract.init_apply("duo", hp, x)
  ref_hp = dict(num_heads=2) if reference == "mha" else dict(num_heads=2, window=3, num_sinks=2)
  params = {k: v for k, v in variables["params"].items() if k != "alpha"}
  y_ref = build(reference, **ref_hp).apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=2e-5)


@pytest.mark.parametrize("hp", [VARIANTS["duo"], dict(num_heads=4, num_kv_heads=2, window=3, num_sinks=1,
                                                     positional="alibi")], ids=["rope", "gqa_alibi"])
def test_duo_static_split_equals_hard_assignment(hp):
  """The deployment mode (a static streaming_heads tuple, each head computing one half)
  equals the hard-assigned gate mode (both halves computed, a 0/1 mix), GQA and ALiBi
  heads included, and decodes like its full pass."""
  x, _ = contract.make_inputs(length=16)
  alpha = jnp.linspace(0.2, 0.9, hp["num_heads"])
  _, variables, _ = contract.init_apply("duo", hp, x)
  variables = {"params": {**variables["params"], "alpha": alpha}}
  heads = routed.duo_streaming_heads(alpha, 0.5)
  assert 0 < len(heads) < hp["num_heads"]
  gated = build("duo", **hp, hard_assign_threshold=0.5).apply(variables, x)
  split = build("duo", **hp, streaming_heads=heads).apply(variables, x)
  np.testing.assert_allclose(np.asarray(split), np.asarray(gated), atol=2e-5)
  contract.check_decode_matches_full("duo", {**hp, "streaming_heads": heads}, length=8)
  with pytest.raises(ValueError, match="streaming_heads must be head indices"):
    build("duo", **hp, streaming_heads=(hp["num_heads"],)).init(jax.random.key(0), x)


# ---- ops: efficient forms equal their references (incl. padding, tiling and cross lengths) -----


def test_ops_efficient_equal_reference():
  """Tiling knobs do not change results: MoBA in one query tile, and the running top-k over
  5-key tiles (with padding of the last tile and a data-dependent mask) equal the references."""
  ks = jax.random.split(jax.random.key(3), 3)
  b, t, h, d = 2, 21, 2, 8
  q, k, v = (jax.random.normal(kk, (b, t, h, d)) for kk in ks)
  a = BS.moba_attention(q, k, v, block_size=4, top_k=3, q_chunk=21)
  np.testing.assert_allclose(np.asarray(a), np.asarray(BS.moba_attention_reference(q, k, v, block_size=4, top_k=3)),
                             atol=1e-5)
  mask = M.Causal() & M.KeyPadding(jnp.arange(t)[None].repeat(b, 0) < 17)
  a = BS.topk_attention(q, k, v, top_k=6, mask=mask, block_k=5)
  np.testing.assert_allclose(np.asarray(a), np.asarray(BS.topk_attention_reference(q, k, v, top_k=6, mask=mask)),
                             atol=1e-5)


# ---- contract --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


DECODE = {  # moba: 2-token blocks so an 8-token decode crosses blocks and selects among past ones
    "moba": dict(num_heads=2, block_size=2, top_k=2),
    "topk": VARIANTS["topk"],
    "duo": VARIANTS["duo"],
}


@pytest.mark.parametrize("name", list(DECODE))
def test_decode_matches_full(name):
  contract.check_decode_matches_full(name, DECODE[name], length=8, chunk=1)
  if name != "duo":  # duo's halves are the shared softmax op, already decode-tested with chunks
    contract.check_decode_matches_full(name, DECODE[name], length=9, chunk=3)


@pytest.mark.parametrize("name", ["lsh", "moba"])
def test_extra_mask_is_an_error(name):
  x, _ = contract.make_inputs(length=8)
  module, variables, _ = contract.init_apply(name, VARIANTS[name], x)
  with pytest.raises(ValueError, match="extra mask"):
    module.apply(variables, x, mask=M.KeyPadding(jnp.ones((2, 8), bool)))
