"""Sigmoid attention: element-wise sigmoid weights, no row normalisation.

Ramapuram et al., 2024, "Theory, Analysis, and Best Practices for Sigmoid
Self-Attention" (arXiv:2409.04431), Eq. (2) and Sec. 3.2:

    SigmoidAttn(Q, K, V) = sigmoid(Q K^T / sqrt(d) + b) V,    b = -log(n)

with n the sequence length, so that at initialisation the row sum of weights is O(1)
like softmax's. Masked keys get weight 0 (they contribute nothing; no normaliser).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.blocked import blocked_attention
from attnlab.attention.ops.softmax.common import attention_scores, dense_allowed, weighted_values
from attnlab.attention.ops.softmax.weightings import Sigmoid

FAMILY = "softmax.sigmoid"


def sequence_bias(n: int) -> float:
  """The paper's b = -log(n) for a sequence of n keys."""
  if n < 1:
    raise ValueError(f"sigmoid attention's bias needs n >= 1, got {n}")
  return -math.log(n)


def sigmoid_attention_reference(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0,
                                seq_bias=None, return_weights=False):
  """sigmoid(q k^T * scale + bias + seq_bias) v, materialised in fp32.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv]; seq_bias: the scalar b
  (default -log(Tk)); bias: an additional positional bias (array or callable);
  masked pairs get weight 0. Returns [B, Tq, Hq, Dv] in q's dtype (and the weights
  [B, Hq, Tq, Tk] if return_weights).
  """
  tq, tk = q.shape[1], k.shape[1]
  b = sequence_bias(tk) if seq_bias is None else seq_bias
  s = attention_scores(q, k, bias=bias, scale=scale, q_offset=q_offset)
  w = jax.nn.sigmoid(s + b)
  allowed = dense_allowed(mask, tq, tk, q_offset)
  if allowed is not None:
    w = jnp.where(allowed, w, 0.0)
  out = weighted_values(w, v, q.dtype)
  return (out, w) if return_weights else out


def sigmoid_attention_blocked(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0, seq_bias=None,
                              block_q=None, block_k=None):
  """The "xla" implementation: blocked.blocked_attention with the `Sigmoid` weighting, so
  EMPTY tiles are skipped and the output is the plain sum of w v over the visited tiles
  (no normaliser). seq_bias must be a static number here. Shapes as in the reference."""
  b = sequence_bias(k.shape[1]) if seq_bias is None else seq_bias
  try:
    b = float(b)
  except TypeError as e:  # a tracer: the weighting's offset is static
    raise ValueError("sigmoid_attention impl='xla' needs a static seq_bias (a number); "
                     "use impl='reference' for a traced one") from e
  return blocked_attention(q, k, v, Sigmoid(b), mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                           block_q=block_q, block_k=block_k)


def sigmoid_attention(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0, seq_bias=None,
                      impl="auto", block_q=None, block_k=None):
  """Sigmoid attention through the dispatch table (family "softmax.sigmoid"): impl
  "reference" (materialised) or "xla"/"auto" (blocked, masked tiles skipped; block_q /
  block_k: its tiles, None = the blocked default). seq_bias defaults to -log(Tk) of the full key
  array (not of a tile). Shapes as in the reference."""
  b = sequence_bias(k.shape[1]) if seq_bias is None else seq_bias
  return D.dispatch(FAMILY, impl, q, k, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                    block_q=block_q, block_k=block_k, seq_bias=b)
