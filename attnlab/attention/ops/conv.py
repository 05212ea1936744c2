"""Long causal convolution by FFT, the O(T log T) primitive of convolutional token mixers
(Mega's EMA kernel in `ops.linear.mega_ema`, Zoology's BaseConv in `variants.conv`).

y_t = sum_{s=0}^{min(t, L-1)} h_s x_{t-s}: a per-channel causal filter h [L, D] over x
[B, T, D]. The FFT runs at length 2T, so the circular product never wraps (no output
position receives a term with s > t).
"""

from __future__ import annotations

import jax.numpy as jnp


def causal_conv_fft(x, h):
  """Per-channel causal convolution by FFT. x [B, T, D]; h [L, D] (any L: a filter longer
  than T is cut at T, a shorter one is zero beyond L). Returns y [B, T, D] fp32 with
  y[:, t] = sum_{s <= min(t, L-1)} h[s] * x[:, t - s]."""
  x = x.astype(jnp.float32)
  t = x.shape[1]
  n_fft = 2 * t
  h = h[:t].astype(jnp.float32)
  return jnp.fft.irfft(jnp.fft.rfft(x, n_fft, axis=1) * jnp.fft.rfft(h, n_fft, axis=0)[None],
                       n_fft, axis=1)[:, :t]


__all__ = ["causal_conv_fft"]
