"""The Pareto front of runs that trade a metric against costs (accuracy vs FLOPs and memory)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_mask(objectives, minimize: Sequence[bool]) -> np.ndarray:
  """bool [N]: which of N points are Pareto-optimal (no other point is at least as good in
  every objective and strictly better in one).

  objectives [N, k]; minimize[j] says whether objective j is minimised (a cost, an error)
  or maximised (an accuracy). Points with a NaN objective are never on the front and do
  not dominate; equal points are all kept.
  """
  obj = np.asarray(objectives, np.float64)
  if obj.ndim != 2 or obj.shape[1] != len(minimize):
    raise ValueError(f"objectives must be [N, {len(minimize)}], got shape {obj.shape}")
  signed = np.where(np.asarray(minimize, bool), obj, -obj)  # everything minimised
  finite = np.isfinite(signed).all(axis=1)
  on_front = finite.copy()
  for i in np.flatnonzero(finite):
    others = signed[finite]
    dominated = (others <= signed[i]).all(axis=1) & (others < signed[i]).any(axis=1)
    on_front[i] = not dominated.any()
  return on_front


__all__ = ["pareto_mask"]
