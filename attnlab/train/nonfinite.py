"""Finding the first non-finite value of a run: the loss, or one gradient tensor.

The jitted train step returns, besides its scalar metrics, `GRAD_FINITE`: a bool vector
[number of param leaves] saying which gradient tensors are all finite (one `isfinite`
reduction per leaf, fused into the step). The host checks the fetched metrics before
every log and every checkpoint, so a non-finite step is reported by name and nothing
non-finite is ever saved.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

GRAD_FINITE = "grad_finite"


def finite_flags(grads: Any) -> jax.Array:
  """bool [number of leaves of `grads`]: True where that leaf has no NaN or inf (leaves order)."""
  return jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])


def grad_names(params: Any) -> list[str]:
  """["grad of params['layer']['kernel']", ...] in `jax.tree.leaves(params)` order."""
  return [f"grad of params{jax.tree_util.keystr(p)}"
          for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def first_nonfinite(host_metrics: list[tuple[int, dict]], names: list[str] | None = None
                    ) -> tuple[int, str, float] | None:
  """(step, what, loss) of the first step, in list order, with a non-finite loss or gradient.

  host_metrics: [(step, fetched step metrics)]; what is "loss" (the differentiated
  objective: "objective" when auxiliary losses exist, else "loss") or the name of the
  first non-finite gradient leaf (`names[i]`, default "grad leaf #i"). None if all finite.
  """
  for step, m in host_metrics:
    loss = float(np.asarray(m.get("objective", m["loss"])))
    if not np.isfinite(loss):
      return step, "loss", loss
    flags = m.get(GRAD_FINITE)
    if flags is not None and not np.all(flags):
      i = int(np.argmin(np.asarray(flags)))
      return step, names[i] if names else f"grad leaf #{i}", loss
  return None
