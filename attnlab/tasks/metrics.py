"""Weighted token metrics in jnp (jit-able): cross-entropy, accuracy, bits per token."""

from __future__ import annotations

import math
from typing import Mapping

import jax.numpy as jnp
import optax

LN2 = math.log(2.0)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(values * weights) / sum(weights) for [B, T] arrays; 0 when all weights are 0."""
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights)
  return jnp.sum(values.astype(jnp.float32) * weights) / jnp.maximum(total, 1e-8)


def token_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-position cross-entropy (nats), float32 [B, T], from logits [B, T, V] and int targets [B, T].

  Computed in float32 with optax.softmax_cross_entropy_with_integer_labels.
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def token_metrics(logits: jnp.ndarray, batch: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
  """Weighted `loss` (mean cross-entropy, nats) and `accuracy` (argmax == target).

  logits [B, T, V]; batch["targets"] int [B, T]; batch["weights"] float [B, T].
  Both are means over the weighted positions only; returns float32 scalars.
  """
  targets, weights = batch["targets"], batch["weights"]
  loss = weighted_mean(token_cross_entropy(logits, targets), weights)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {"loss": loss, "accuracy": weighted_mean(correct, weights)}


def bits(loss_nats: jnp.ndarray) -> jnp.ndarray:
  """Converts a mean cross-entropy in nats to bits per token (loss / ln 2)."""
  return loss_nats / LN2
