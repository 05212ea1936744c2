"""Weightings: how the blocked kernel (blocked.py) turns a tile of scores into weights.

A `Weighting` is a small static strategy object for `blocked.blocked_attention`. The
kernel visits the same tile lists for every weighting (EMPTY tiles never, FULL tiles
without mask arithmetic) and asks the weighting, per tile of scores s (fp32, masked
entries -inf):

  forward, normalised weightings (w_ij = n(s_ij) exp(a(s_ij)) / sum_j' exp(a(s_ij'))):
    exponent(s) -> a          the online-softmax logits (running max m, sum l over a)
    numerator(s, p) -> p'     what multiplies v, with p = exp(a - m)
  forward, unnormalised weightings (normalised = False):
    weights(s, None) -> w     summed over visited tiles as o = sum_j w_ij v_j
  backward (the row statistic `lse` = m + log l is saved by the forward):
    weights(s, lse) -> w      the exact weights of the tile
    dscores(s, w, dp, delta) -> ds   dL/ds from dp = dL/dw and delta_i = dO_i . o_i

delta = dO . o = sum_j w_ij dp_ij holds for every weighting here because o = sum_j w v.
Rows with no allowed key have l = 0: o = 0 and lse = +inf (so exp(a - lse) = 0).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Softmax:
  """w = exp(s - lse): standard softmax attention (and the sink softmax, whose extra
  logit enters as the online-softmax start value; see `blocked_attention(row_logit=)`)."""
  normalised = True

  def exponent(self, s):
    return s

  def numerator(self, s, p):
    del s
    return p

  def weights(self, s, lse):
    return jnp.exp(s - lse)

  def dscores(self, s, w, dp, delta):
    del s
    return w * (dp - delta)  # softmax backward: ds = w (dp - sum_j w dp)


@dataclasses.dataclass(frozen=True)
class Signed(Softmax):
  """Cog attention's w = sign(s) exp(|s|) / sum exp(|s|) (Lv et al., 2024; signed.py).

  The magnitudes are a softmax over a = |s| (masked: -inf, not |-inf|), the sign rides
  along in the numerator. Backward: with q = softmax(a), sigma = sign(s) and w = sigma q,
  dL/da_k = q_k (sigma_k dp_k - delta) and da/ds = sigma, so ds = w (sigma dp - delta)
  (0 at s = 0, where sign and |.| have derivative 0, as autodiff of the reference gives).
  """

  def exponent(self, s):
    return jnp.where(s == -jnp.inf, -jnp.inf, jnp.abs(s))

  def numerator(self, s, p):
    return jnp.sign(s) * p

  def weights(self, s, lse):
    return jnp.sign(s) * jnp.exp(self.exponent(s) - lse)

  def dscores(self, s, w, dp, delta):
    return w * (jnp.sign(s) * dp - delta)


@dataclasses.dataclass(frozen=True)
class Sigmoid:
  """w = sigmoid(s + offset), no normaliser (Ramapuram et al., 2024; sigmoid.py): the
  output is a plain sum over the visited tiles; masked s = -inf gives w = 0 and ds = 0.
  offset: the static scalar b (= -log n)."""
  offset: float = 0.0
  normalised = False

  def weights(self, s, lse):
    del lse
    return jax.nn.sigmoid(s + self.offset)

  def dscores(self, s, w, dp, delta):
    del s, delta
    return dp * w * (1.0 - w)  # sigmoid'(x) = sigmoid(x) (1 - sigmoid(x))


SOFTMAX = Softmax()
SIGNED = Signed()
