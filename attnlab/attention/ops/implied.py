"""The attention matrix implied by any op that is linear in its values (analysis only).

Many mechanisms do not form a [Tq, Tk] weight matrix on their efficient path (sorted LSH
chunks, routed clusters, gated or delta-rule recurrences, low-rank factors), yet their
head output is linear in the values with one scalar weight per (query, key) pair:

    o[b, t, h, :] = sum_j W[b, h, t, j] v[b, j, g(h), :]        (g: h's value head)

Then W is read off exactly by feeding the op the identity as values: v[b, j, g, :] =
e_j (one-hot over the Tk keys, Dv = Tk) gives o[b, t, h, j] = W[b, h, t, j]. This is
the Jacobian d o / d v, obtained in one forward pass of Tk-wide values: O(Tq Tk^2) work,
so short inputs only. `attnlab.analysis` uses it as a variant's reference path; a
training call never does.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def identity_values(batch: int, length: int, heads: int):
  """The identity as values: float32 [batch, length, heads, length], v[b, j, g, :] = e_j."""
  return jnp.broadcast_to(jnp.eye(length, dtype=jnp.float32)[None, :, None, :], (batch, length, heads, length))


def implied_weights(attend: Callable, v):
  """W [B, H, Tq, Tk] fp32 of an op linear in its values.

  attend(v') maps values v' [B, Tk, Hv, Dv'] (any Dv') to [B, Tq, H, Dv'] and must be
  linear in v' with the rest of the op held fixed (q, k, gates, masks closed over); v
  [B, Tk, Hv, Dv] is the op's actual values (only its shape is read). Returns
  attend(identity_values(B, Tk, Hv)) rearranged to [B, H, Tq, Tk], so that
  o = W @ v (per head, `ops.softmax.common.weighted_values`). An op that is not linear in v
  (a normalisation of v, an activation after the weighting) gives no such W: the caller
  applies it to the op's linear part only."""
  b, tk, hv = v.shape[:3]
  o = attend(identity_values(b, tk, hv))  # [B, Tq, H, Tk]
  return jnp.swapaxes(o, 1, 2).astype(jnp.float32)


__all__ = ["identity_values", "implied_weights"]
