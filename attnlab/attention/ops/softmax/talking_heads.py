"""Talking-heads attention: learned mixing across heads before and after the softmax.

Shazeer et al., 2020, "Talking-Heads Attention" (arXiv:2003.02436), Sec. 4 / Alg. 1:

    J = einsum(Q, K)      logits per "key" head        [B, Hk, Tq, Tk]
    L = einsum(J, P_l)    mix heads: Hk -> H           (P_l [Hk, H])
    W = softmax(L)        per softmax head h (masked)
    U = einsum(W, P_w)    mix heads: H -> Hv           (P_w [H, Hv])
    O = einsum(U, V)                                   [B, Tq, Hv, Dv]

A positional bias (ALiBi, [.., H, ..]) is added to the mixed logits L; masking is
applied to L (mixing may otherwise leak masked logits). Masked weights are exactly 0, so
the post-softmax mixing keeps them 0.

The "xla" implementation (`talking_heads_attention_blocked`) runs over blocked.py's tile
lists. What it can skip: the mask does not depend on the head, so a masked (i, j) is
masked in every softmax head, W and hence U are 0 there for every value head: EMPTY
tiles are never visited in any pass and FULL tiles carry no mask arithmetic, as in mha.
What it cannot skip: U mixes weights of heads with different normalisers, so a head's
weights can only be mixed once its normaliser is final (no single online pass without
H x Hv accumulators), and the softmax backward's delta_h = sum_j W_hj dW_hj mixes value
heads (it is not dO . O). The exact blocked form therefore makes two passes each way:

  forward   1. statistics: J, L per tile -> lse [B, H, Tq]       (QK^T only)
            2. W = exp(L - lse), U = W P_w, O += U V              (QK^T, UV)
  backward  1. delta_h = sum_j W_h (dU P_w^T)_h, dU = dO V^T      (QK^T, dO V^T)
            2. the FlashAttention-2 step through both mixings     (QK^T, dV, dU, dQ, dK)

i.e. 10 T x T x D products (on the visited tiles) where mha needs 7, plus the head
mixings (H/D of a product each): about 1.5x mha's FLOPs at H = 4, well below the ~2.1x the
query-tiled dense path cost (T = 16k causal). Memory O(T * block). (One
forward pass with H x Hv online accumulators W_h V_v would also give delta_h and save the
extra passes, but costs H + 6 products at Hv = H: equal at H = 4, worse above.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_qkv, default_scale, mask_flatten
from attnlab.attention.ops.softmax import blocked as BL
from attnlab.attention.ops.softmax.common import attention_scores, dense_allowed
from attnlab.attention.ops.softmax.reference import dense_bias, masked_softmax
from attnlab.attention.ops.softmax.weightings import SOFTMAX

FAMILY = "softmax.talking_heads"


def talking_heads_attention_reference(q, k, v, logits_mix, weights_mix, *, mask=None, bias=None,
                                      scale=None, q_offset=0, return_weights=False):
  """Talking-heads attention materialised in fp32.

  q [B, Tq, Hk, D], k [B, Tk, Hkv, D] (Hk % Hkv == 0), v [B, Tk, Hv, Dv];
  logits_mix [Hk, H], weights_mix [H, Hv]; bias broadcastable to [B, H, Tq, Tk] (or a
  callable). Returns [B, Tq, Hv, Dv] in q's dtype (and the mixed weights U
  [B, Hv, Tq, Tk] if return_weights). Fully masked rows output zeros.
  """
  tq, tk = q.shape[1], k.shape[1]
  _check_mixing(q, v, logits_mix, weights_mix)
  j = attention_scores(q, k, scale=scale)  # [B, Hk, Tq, Tk]
  logits = jnp.einsum("bkqt,kh->bhqt", j, logits_mix.astype(jnp.float32))
  pos_bias = dense_bias(bias, tq, tk, q_offset)
  if pos_bias is not None:
    logits = logits + jnp.asarray(pos_bias).astype(jnp.float32)
  allowed = dense_allowed(mask, tq, tk, q_offset)
  w = masked_softmax(logits, allowed)
  u = jnp.einsum("bhqt,hv->bvqt", w, weights_mix.astype(jnp.float32))
  out = jnp.einsum("bvqt,btvd->bqvd", u, v.astype(jnp.float32)).astype(q.dtype)
  return (out, u) if return_weights else out


# ---- blocked ("xla") ----------------------------------------------------------------


def _tile_logits(st, q, k, pl, bias, mask_leaves, i, j, q_offset, masked):
  """Tile (i, j): J = q_i k_j^T [B, Hk, bq, bk] and the mixed, biased, masked logits
  L [B, H, bq, bk] (masked entries -inf). q is pre-scaled; layout heads-first."""
  bq, bk = st.plan.block_q, st.plan.block_k
  jt = jnp.einsum("bkqd,bktd->bkqt", BL._rows(q, i, bq), BL._rows(k, j, bk), preferred_element_type=jnp.float32)
  lt = jnp.einsum("bkqt,kh->bhqt", jt, pl)
  b = BL._tile_bias(st, bias, i, j, q_offset)
  if b is not None:
    lt = lt + b
  if masked:
    lt = jnp.where(BL._tile_allowed(st, mask_leaves, i, j, q_offset), lt, -jnp.inf)
  return jt, lt


def _over_tiles(st, step, carry):
  """Runs `step(masked)` (a scan body over (i, j) pairs) on the FULL, then the PARTIAL tiles."""
  for masked, tiles in ((False, st.plan.full), (True, st.plan.partial)):
    if len(tiles):
      carry, _ = jax.lax.scan(step(masked), carry, jnp.asarray(tiles))
  return carry


def _th_forward(st, q, k, v, pl, pw, bias, q_offset, mask_leaves):
  """Both forward passes (module docstring). Returns o [B, Hv, Tq_pad, Dv], lse [B, H, Tq_pad]."""
  bq, bk = st.plan.block_q, st.plan.block_k
  shape = (q.shape[0], pl.shape[1], q.shape[2])
  upd = lambda x, new, i: jax.lax.dynamic_update_slice_in_dim(x, new, i * bq, axis=2)  # noqa: E731

  def stats(masked):
    def body(carry, ij):
      m, l = carry
      _, lt = _tile_logits(st, q, k, pl, bias, mask_leaves, ij[0], ij[1], q_offset, masked)
      m_old, l_old = BL._rows(m, ij[0], bq), BL._rows(l, ij[0], bq)
      m_new = jnp.maximum(m_old, lt.max(-1))
      m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # fully masked so far
      l_new = jnp.exp(m_old - m_safe) * l_old + jnp.exp(lt - m_safe[..., None]).sum(-1)
      return (upd(m, m_new, ij[0]), upd(l, l_new, ij[0])), None
    return body

  m, l = _over_tiles(st, stats, (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32)))
  empty = l == 0.0
  lse = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))  # +inf: W = 0 on empty rows

  def values(masked):
    def body(o, ij):
      i, j = ij[0], ij[1]
      _, lt = _tile_logits(st, q, k, pl, bias, mask_leaves, i, j, q_offset, masked)
      ut = jnp.einsum("bhqt,hv->bvqt", jnp.exp(lt - BL._rows(lse, i, bq)[..., None]), pw)
      ov = jnp.einsum("bvqt,bvtd->bvqd", ut, BL._rows(v, j, bk), preferred_element_type=jnp.float32)
      return upd(o, BL._rows(o, i, bq) + ov, i), None
    return body

  o = _over_tiles(st, values, jnp.zeros((q.shape[0], v.shape[1], q.shape[2], v.shape[3]), jnp.float32))
  return o, lse


def _th_backward(st, q, k, v, pl, pw, bias, q_offset, mask_leaves, lse, do):
  """Both backward passes (module docstring): grads of q (pre-scaled), k, v, P_l, P_w, bias."""
  bq, bk = st.plan.block_q, st.plan.block_k
  acc = lambda x, t, i, e: jax.lax.dynamic_update_slice_in_dim(x, BL._rows(x, i, e) + t, i * e, axis=2)  # noqa: E731

  def tile(masked, i, j):  # J, W, dU and dW = dU P_w^T of tile (i, j)
    jt, lt = _tile_logits(st, q, k, pl, bias, mask_leaves, i, j, q_offset, masked)
    wt = jnp.exp(lt - BL._rows(lse, i, bq)[..., None])
    du = jnp.einsum("bvqd,bvtd->bvqt", BL._rows(do, i, bq), BL._rows(v, j, bk), preferred_element_type=jnp.float32)
    return jt, wt, du, jnp.einsum("bvqt,hv->bhqt", du, pw)

  def deltas(masked):
    def body(delta, ij):
      _, wt, _, dw = tile(masked, ij[0], ij[1])
      return acc(delta, jnp.sum(wt * dw, -1), ij[0], bq), None
    return body

  delta = _over_tiles(st, deltas, jnp.zeros(lse.shape, jnp.float32))

  def grads(masked):
    def body(carry, ij):
      dq, dk, dv, dpl, dpw, dbias = carry
      i, j = ij[0], ij[1]
      jt, wt, du, dw = tile(masked, i, j)
      ut = jnp.einsum("bhqt,hv->bvqt", wt, pw)
      dv = acc(dv, jnp.einsum("bvqt,bvqd->bvtd", ut, BL._rows(do, i, bq), preferred_element_type=jnp.float32), j, bk)
      dpw = dpw + jnp.einsum("bhqt,bvqt->hv", wt, du)
      dl = wt * (dw - BL._rows(delta, i, bq)[..., None])  # softmax backward per softmax head
      if dbias is not None:
        dbias = BL._add_dbias(st, dbias, dl, i, j)
      dj = jnp.einsum("bhqt,kh->bkqt", dl, pl)
      dpl = dpl + jnp.einsum("bkqt,bhqt->kh", jt, dl)
      dq = acc(dq, jnp.einsum("bkqt,bktd->bkqd", dj, BL._rows(k, j, bk), preferred_element_type=jnp.float32), i, bq)
      dk = acc(dk, jnp.einsum("bkqt,bkqd->bktd", dj, BL._rows(q, i, bq), preferred_element_type=jnp.float32), j, bk)
      return (dq, dk, dv, dpl, dpw, dbias), None
    return body

  zeros = lambda x: None if x is None else jnp.zeros(x.shape, jnp.float32)  # noqa: E731
  return _over_tiles(st, grads, tuple(map(zeros, (q, k, v, pl, pw, bias))))


def _core(st):
  """custom_vjp core on heads-first, padded, pre-scaled operands."""

  @jax.custom_vjp
  def core(q, k, v, pl, pw, bias, q_offset, mask_leaves):
    return _th_forward(st, q, k, v, pl, pw, bias, q_offset, mask_leaves)[0]

  def fwd(q, k, v, pl, pw, bias, q_offset, mask_leaves):
    o, lse = _th_forward(st, q, k, v, pl, pw, bias, q_offset, mask_leaves)
    return o, (q, k, v, pl, pw, bias, q_offset, mask_leaves, lse)

  def bwd(res, do):
    q, k, v, pl, pw, bias, q_offset, mask_leaves, lse = res
    return (*_th_backward(st, q, k, v, pl, pw, bias, q_offset, mask_leaves, lse, do), None, None)

  core.defvjp(fwd, bwd)
  return core


def talking_heads_attention_blocked(q, k, v, logits_mix, weights_mix, *, mask=None, bias=None, scale=None,
                                    q_offset=0, block_q=None, block_k=None):
  """Talking-heads attention over blocked.py's tile lists (module docstring: two passes
  forward, two backward; EMPTY tiles skipped in all of them), equal to the reference up to
  rounding and differentiable in q, k, v, both mixing matrices and an array bias.
  Arguments and shapes as in `talking_heads_attention_reference`; block_q / block_k: tile edges."""
  _check_mixing(q, v, logits_mix, weights_mix)
  bsz, tq, hk, d = q.shape
  tk, h = k.shape[1], logits_mix.shape[1]
  check_qkv(q, k, k)
  target_q, target_k = BL.default_blocks(bsz, h)
  bq = block_q or BL.choose_block(tq, target_q)
  bk = block_k or BL.choose_block(tk, target_k)
  plan = BL.plan_tiles(mask, tq, tk, bq, bk, q_offset)
  tq_pad, tk_pad = plan.nq * bq, plan.nk * bk
  heads_first = lambda x, t, pad: jnp.pad(x.astype(jnp.float32).transpose(0, 2, 1, 3),  # noqa: E731
                                          ((0, 0), (0, 0), (0, pad - t), (0, 0)))
  qf = heads_first(q.astype(jnp.float32) * default_scale(d, scale), tq, tq_pad)
  kf = heads_first(jnp.repeat(k, hk // k.shape[2], axis=2), tk, tk_pad)  # GQA keys per q head
  vf = heads_first(v, tk, tk_pad)
  bias_fn, bias_arr, full_dims = None, None, None
  if callable(bias):
    bias_fn = bias
  elif bias is not None:
    bias_arr, full_dims = BL._prepare_bias(jnp.asarray(bias), bsz, h, tq, tk, tq_pad, tk_pad)
  leaves, rebuild = (None, None) if mask is None else mask_flatten(mask)
  st = BL._Static(plan, SOFTMAX, 1, tq, tk, rebuild, bias_fn, full_dims)
  q_off = q_offset if isinstance(q_offset, (int, np.integer)) else jnp.asarray(q_offset, jnp.int32)
  out = _core(st)(qf, kf, vf, logits_mix.astype(jnp.float32), weights_mix.astype(jnp.float32), bias_arr,
                  q_off, leaves)  # [B, Hv, Tq_pad, Dv]
  return out[:, :, :tq].transpose(0, 2, 1, 3).astype(q.dtype)


def _check_mixing(q, v, logits_mix, weights_mix):
  if logits_mix.shape[0] != q.shape[2] or weights_mix.shape[1] != v.shape[2] \
      or logits_mix.shape[1] != weights_mix.shape[0]:
    raise ValueError(f"mixing shapes {logits_mix.shape}, {weights_mix.shape} do not fit q heads "
                     f"{q.shape[2]} and v heads {v.shape[2]}")


def talking_heads_attention(q, k, v, logits_mix, weights_mix, *, mask=None, bias=None, scale=None,
                            q_offset=0, impl="auto", block_q=None, block_k=None):
  """Talking-heads attention through the dispatch table (family "softmax.talking_heads"):
  impl "reference" or "xla"/"auto" (blocked, masked tiles skipped; see the module
  docstring). Shapes as in the reference."""
  return D.dispatch(FAMILY, impl, q, k, v, logits_mix, weights_mix, mask=mask, bias=bias, scale=scale,
                    q_offset=q_offset, block_q=block_q, block_k=block_k)
