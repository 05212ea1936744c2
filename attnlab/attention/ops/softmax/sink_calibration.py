"""Post-softmax sink calibration (ACT): shrink the attention sinks' weight, give it to the other keys.

Yu et al., 2024, "Unveiling and Harnessing Hidden Attention Sinks: Training-Free Attention
Calibration for Enhancing Large Language Models" (ACT, ICML 2024), Sec. 4: per head, a
key is a sink when the mean attention it receives exceeds a threshold; its weight in
every row is scaled by a factor beta < 1 and the removed mass is added to the row's other
visible keys in proportion to their weights. With m_i the row's sink mass:

  w'_ij = beta w_ij (j a sink),   w'_ij = w_ij (1 - beta m_i) / (1 - m_i) (otherwise),

so rows still sum to 1, and with no sink the weights are unchanged. Departures: ACT
calibrates a searched subset of heads and exempts the first token; here every head is
calibrated (one threshold, one factor) and no key is exempt. A row whose visible mass
is all on sinks (m_i = 1, nothing to redistribute to) is left unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def calibrate_sinks(w, allowed, *, threshold: float, factor: float):
  """The calibrated weights and the sink set.

  w [B, H, Tq, Tk]: row-stochastic attention weights (zeros where not allowed);
  allowed bool, broadcastable to [B, 1 | H, Tq, Tk]: which (query, key) pairs are visible.
  A key's mean received attention averages w over the queries that see it (a key no
  query sees is not a sink). Returns (w' [B, H, Tq, Tk], sinks bool [B, H, Tk]). The sink
  set is a discrete choice: no gradient flows through the detection."""
  w = w.astype(jnp.float32)
  allowed = jnp.broadcast_to(allowed, w.shape)
  seen_by = jnp.sum(allowed, axis=2)  # [B, H, Tk] queries that see each key
  received = jnp.sum(jnp.where(allowed, w, 0.0), axis=2) / jnp.maximum(seen_by, 1)
  sinks = jax.lax.stop_gradient((received > threshold) & (seen_by > 0))
  is_sink = sinks[:, :, None, :]
  m = jnp.sum(jnp.where(is_sink, w, 0.0), axis=-1, keepdims=True)  # [B, H, Tq, 1] sink mass per row
  rest = 1.0 - m
  ok = rest > 1e-6  # some non-sink mass to receive the removed weight
  boost = jnp.where(ok, (1.0 - factor * m) / jnp.where(ok, rest, 1.0), 1.0)
  scale = jnp.where(is_sink, jnp.where(ok, factor, 1.0), boost)
  return w * scale, sinks


__all__ = ["calibrate_sinks"]
