"""Task metrics in jnp (jit-able) as (sum, count) pairs, so eval over many batches is exact.

Every metric function returns `{name: (sum, count)}` with float32 scalars: the trainer
minimises sum / count of "loss" and reports, for eval, Σ sum / Σ count over all eval
batches (not a mean of per-batch means). Padded rows have weight 0 and count for nothing.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax.numpy as jnp
import optax

LN2 = math.log(2.0)

Pair = tuple[jnp.ndarray, jnp.ndarray]


def weighted_pair(values: jnp.ndarray, weights: jnp.ndarray) -> Pair:
  """(sum(values * weights), sum(weights)) as float32 scalars; values and weights broadcast."""
  weights = jnp.broadcast_to(weights.astype(jnp.float32), values.shape)
  return jnp.sum(values.astype(jnp.float32) * weights), jnp.sum(weights)


def ratio(pair: Pair) -> jnp.ndarray:
  """sum / count of a metric pair (0 when the count is 0)."""
  total, count = pair
  return total / jnp.maximum(count, 1e-8)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(values * weights) / sum(weights); 0 when all weights are 0."""
  return ratio(weighted_pair(values, weights))


def token_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-position cross-entropy (nats), float32 [...], from logits [..., V] and int targets [...].

  Computed in float32 with optax.softmax_cross_entropy_with_integer_labels.
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def token_metrics(logits: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, Pair]:
  """`loss` (cross-entropy, nats) and `accuracy` (argmax == target) pairs over weighted positions.

  logits [B, T, V]; batch["targets"] int [B, T]; batch["weights"] float [B, T].
  """
  targets, weights = batch["targets"], batch["weights"]
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {"loss": weighted_pair(token_cross_entropy(logits, targets), weights),
          "accuracy": weighted_pair(correct, weights)}


def classification_metrics(logits: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, Pair]:
  """`loss` (cross-entropy, nats) and `accuracy` pairs over weighted examples.

  logits [B, C]; batch["targets"] int [B]; batch["weights"] float [B] (0 for padding rows).
  """
  return token_metrics(logits, batch)


def regression_metrics(pred: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, Pair]:
  """`loss` (= mse), `mse` and `mae` pairs, averaged over every element of the weighted rows.

  pred and batch["targets"] float [B, ...]; batch["weights"] float [B] (0 for padding rows).
  """
  err = pred.astype(jnp.float32) - batch["targets"].astype(jnp.float32)
  w = batch["weights"].astype(jnp.float32).reshape(err.shape[:1] + (1,) * (err.ndim - 1))
  mse = weighted_pair(err * err, w)
  return {"loss": mse, "mse": mse, "mae": weighted_pair(jnp.abs(err), w)}


def bits(loss_nats: jnp.ndarray) -> jnp.ndarray:
  """Converts a mean cross-entropy in nats to bits per token (loss / ln 2)."""
  return loss_nats / LN2


def bits_pair(loss: Pair) -> Pair:
  """The (sum, count) pair of bits per token from the loss pair (nats)."""
  return bits(loss[0]), loss[1]
