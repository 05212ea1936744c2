"""Mega's damped multi-dimensional EMA (Ma et al., 2023, "Mega: Moving Average Equipped Gated
Attention", Sec. 3.1).

Each of the D input channels is expanded to n (= `ema_dim`) EMA channels:

    u_t = beta x_t                                 (beta [D, n]: expansion)
    h_t = alpha * u_t + (1 - alpha * delta) * h_{t-1}      (alpha, delta in (0, 1)^{D x n})
    y_t = sum_n eta h_t                            (eta [D, n]: projection back)

Writing p = alpha * beta and r = 1 - alpha * delta, y is a causal convolution of x with
the kernel K[d, l] = sum_n eta p r^l (and an initial state contributes sum_n eta r^{t+1} h_{-1}).

Forms (x [B, T, D]; state [B, D, n]):

* `ema_parallel`: the kernel K [D, T] materialised, convolution by FFT (O(T log T));
* `ema_chunked`: chunks of C: intra-chunk Toeplitz [C, C, D] from K[:, :C], inter-chunk
  state through `lax.scan` (O(T) memory; the chunk body is `jax.checkpoint`ed);
* `ema_recurrent`: token by token (the decode form).

All return (y [B, T, D], final state [B, D, n]) (the FFT form's final state is computed in
closed form from the same kernel powers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.conv import causal_conv_fft
from attnlab.attention.ops.linear.common import check_form, scan_chunks, to_chunks

FAMILY = "linear.ema"


def ema_coeffs(alpha, delta, beta):
  """(p, log r) [D, n]: input weight alpha*beta and log decay log(1 - alpha*delta)."""
  return alpha * beta, jnp.log1p(-alpha * delta)


def ema_kernel(alpha, delta, beta, eta, length: int):
  """K [D, length]: K[d, l] = sum_n eta p r^l."""
  p, log_r = ema_coeffs(alpha, delta, beta)
  powers = jnp.exp(log_r[..., None] * jnp.arange(length))  # [D, n, L]
  return jnp.einsum("dn,dnl->dl", eta * p, powers)


def _state0(x, alpha, initial_state):
  b, d = x.shape[0], x.shape[-1]
  if initial_state is None:
    return jnp.zeros((b, d, alpha.shape[-1]), jnp.float32)
  return initial_state.astype(jnp.float32)


def ema_parallel(x, alpha, delta, beta, eta, *, initial_state=None):
  """EMA as an FFT convolution with the materialised kernel. x [B, T, D]; alpha, delta,
  beta, eta [D, n]. Returns (y [B, T, D], final state [B, D, n])."""
  x = x.astype(jnp.float32)
  t = x.shape[1]
  h0 = _state0(x, alpha, initial_state)
  k = ema_kernel(alpha, delta, beta, eta, t)  # [D, T]
  y = causal_conv_fft(x, k.T)
  p, log_r = ema_coeffs(alpha, delta, beta)
  steps = jnp.arange(1, t + 1)
  # Initial state: y_t += sum_n eta r^{t+1} h_{-1}.
  y = y + jnp.einsum("dn,dnt,bdn->btd", eta, jnp.exp(log_r[..., None] * steps), h0)
  # Final state h_{T-1} = r^T h_{-1} + sum_s r^{T-1-s} p x_s.
  rev = jnp.exp(log_r[..., None] * (t - steps))  # [D, n, T]: r^{T-1-s}
  h = jnp.exp(log_r * t) * h0 + jnp.einsum("dns,dn,bsd->bdn", rev, p, x)
  return y, h


def ema_chunked(x, alpha, delta, beta, eta, *, initial_state=None, chunk_size: int = 64,
                checkpoint: bool = True):
  """Chunked EMA: Toeplitz within chunks, state through `lax.scan`. Shapes as
  `ema_parallel`. When chunk_size does not divide T, the last T % chunk_size tokens are
  one extra (shorter) chunk."""
  x = x.astype(jnp.float32)
  t = x.shape[1]
  c = min(chunk_size, t)
  rem = t % c
  if rem:
    y1, h1 = ema_chunked(x[:, :t - rem], alpha, delta, beta, eta, initial_state=initial_state,
                         chunk_size=c, checkpoint=checkpoint)
    y2, h2 = ema_chunked(x[:, t - rem:], alpha, delta, beta, eta, initial_state=h1,
                         chunk_size=rem, checkpoint=checkpoint)
    return jnp.concatenate([y1, y2], axis=1), h2
  h0 = _state0(x, alpha, initial_state)
  p, log_r = ema_coeffs(alpha, delta, beta)
  k = ema_kernel(alpha, delta, beta, eta, c)  # [D, C]
  lag = jnp.arange(c)[:, None] - jnp.arange(c)[None, :]
  toeplitz = jnp.where((lag >= 0)[..., None], k.T[jnp.clip(lag, 0, c - 1)], 0.0)  # [C, C, D]
  steps = jnp.arange(1, c + 1)
  r_in = jnp.exp(log_r[..., None] * steps)  # [D, n, C]: r^{i+1} (state -> outputs)
  r_out = jnp.exp(log_r[..., None] * (c - steps))  # [D, n, C]: r^{C-1-s} (inputs -> state)
  r_c = jnp.exp(log_r * c)
  xs = to_chunks(x, c)

  def body(h, xc):
    y = jnp.einsum("ijd,bjd->bid", toeplitz, xc) + jnp.einsum("dn,dni,bdn->bid", eta, r_in, h)
    h = r_c * h + jnp.einsum("dns,dn,bsd->bdn", r_out, p, xc)
    return h, y

  return scan_chunks(body, h0, xs, t, checkpoint)


def ema_recurrent(x, alpha, delta, beta, eta, *, initial_state=None):
  """EMA token by token (decode form): h = p x_t + r h; y_t = sum_n eta h. Shapes as
  `ema_parallel`."""
  x = x.astype(jnp.float32)
  h0 = _state0(x, alpha, initial_state)
  p, log_r = ema_coeffs(alpha, delta, beta)
  r = jnp.exp(log_r)

  def step(h, xt):  # xt [B, D]
    h = p * xt[..., None] + r * h
    return h, jnp.einsum("dn,bdn->bd", eta, h)

  h, y = jax.lax.scan(step, h0, jnp.moveaxis(x, 1, 0))
  return jnp.moveaxis(y, 0, 1), h


def ema(x, alpha, delta, beta, eta, *, form: str = "chunked", initial_state=None,
        chunk_size: int = 64, impl: str = "auto"):
  """The EMA through the dispatch table (family "linear.ema"): impl "xla" runs `form`
  ("chunked" | "parallel" | "recurrent"; `ema_xla`), "reference" `ema_parallel`.
  x [B, T, D]; alpha, delta, beta, eta [D, n]. Returns (y [B, T, D], state [B, D, n]).
  """
  return D.dispatch(FAMILY, impl, x, alpha, delta, beta, eta, form=form, initial_state=initial_state,
                    chunk_size=chunk_size)


def ema_xla(x, alpha, delta, beta, eta, *, form: str = "chunked", initial_state=None,
            chunk_size: int = 64):
  """The EMA's forms ("chunked" | "parallel" | "recurrent"); shapes as `ema`."""
  check_form(form)
  if form == "chunked":
    return ema_chunked(x, alpha, delta, beta, eta, initial_state=initial_state,
                       chunk_size=chunk_size)
  if form == "parallel":
    return ema_parallel(x, alpha, delta, beta, eta, initial_state=initial_state)
  return ema_recurrent(x, alpha, delta, beta, eta, initial_state=initial_state)
