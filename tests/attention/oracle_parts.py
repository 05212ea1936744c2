"""Building blocks the family oracle tests share, written from the definitions in plain
jnp / numpy (none of them imports attnlab's helpers, so the oracles stay independent)."""

import jax.numpy as jnp
import numpy as np

FWD_TOL = dict(atol=2e-5, rtol=1e-5)  # module vs oracle, forward (fp32)
GRAD_TOL = dict(atol=5e-5, rtol=1e-4)  # and gradients


def head_proj(x, p):
  """x [B, T, D] times a DenseGeneral kernel p["kernel"] [D, H, K] -> [B, T, H, K]."""
  return jnp.einsum("btd,dhk->bthk", x, p["kernel"])


def proj(x, p, name):
  """The projection `name` ("query", "key", ...) of params p: [B, T, D] -> [B, T, H, K]."""
  return head_proj(x, p[name])


def out_proj(y, p):
  """Heads back to the model width: y [B, T, H, K] times p["out"]["kernel"] [H, K, D]."""
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


def rope_bt(x, pos, base=10000.0):
  """RoPE (Su et al., 2021), half-split pairs (i, i + D/2) rotated by pos * base^(-2i/D).
  x [B, T, H, D], pos [B, T]."""
  d = x.shape[-1]
  ang = pos[:, :, None, None] * base ** (-np.arange(0, d // 2) * 2.0 / d)
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)
