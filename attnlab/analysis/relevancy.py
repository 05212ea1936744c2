"""Gradient-weighted relevancy (Chefer, Gur & Wolf, 2021, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", Eqs. 5-6,
the self-attention rule).

R starts as the identity [T, T]; for each layer l (first to last)
  Abar_l = E_h[(grad A_l * A_l)^+]      (elementwise product, negative part clipped)
  R     <- R + Abar_l R
where grad A_l = d y_target / d A_l is the gradient of the explained output with respect
to layer l's attention weights (`capture.weight_gradients`). A zero gradient leaves R = I.
"""

from __future__ import annotations

import numpy as np


def relevancy(weights, grads) -> np.ndarray:
  """weights, grads: [L] of [H, T, T] (one input) -> R [T, T] (R[i, j]: token j's relevance
  to output i; rows not normalised)."""
  t = np.shape(weights[0])[-1]
  r = np.eye(t)
  for a, g in zip(weights, grads):
    cam = np.clip(np.asarray(g, np.float64) * np.asarray(a, np.float64), 0.0, None).mean(axis=0)
    r = r + cam @ r
  return r


__all__ = ["relevancy"]
