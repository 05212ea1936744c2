"""The figures of `attnlab analyze` (matplotlib; each returns a Figure for `html_report.figure_tag`)."""

from __future__ import annotations

import numpy as np

from attnlab.analysis.html_report import plt


def _label_cell(ax, layer: int, head: int) -> None:
  """A layer x head grid cell: no ticks, the head on the top row, the layer on the left."""
  ax.set_xticks([])
  ax.set_yticks([])
  if layer == 0:
    ax.set_title(f"h{head}", fontsize=8)
  if head == 0:
    ax.set_ylabel(f"L{layer}", fontsize=8)


def model_view(weights, title: str = ""):
  """The layer x head thumbnail grid ("model view", as bertviz's): weights [L] of
  [H, T, T] for one input; signed maps use a diverging colour map."""
  n_layers, n_heads = len(weights), np.shape(weights[0])[0]
  fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.4 * n_heads + 0.6, 1.4 * n_layers + 0.4),
                           squeeze=False)
  for layer, w in enumerate(weights):
    w = np.asarray(w)
    signed = bool((w < 0).any())
    for head in range(n_heads):
      ax = axes[layer, head]
      lim = float(np.abs(w[head]).max()) or 1.0
      ax.imshow(w[head], cmap="RdBu_r" if signed else "viridis", vmin=-lim if signed else 0.0, vmax=lim,
                interpolation="nearest")
      _label_cell(ax, layer, head)
  fig.suptitle(title or "attention maps (rows: queries, columns: keys)", fontsize=9)
  return fig


def token_overlay(rows: dict, labels):
  """One coloured strip per method: rows {name: [T] relevance of each input position},
  each scaled to its max; `labels` [T] (token ids or positions) under the cells."""
  t = len(labels)
  fig, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, 0.32 * t), 0.7 * len(rows) + 0.5), squeeze=False)
  for ax, (name, r) in zip(axes[:, 0], rows.items()):
    r = np.asarray(r, np.float64)
    ax.imshow((r / (np.abs(r).max() or 1.0))[None], cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks([0])
    ax.set_yticklabels([name], fontsize=8)
    ax.set_xticks(range(t))
    ax.set_xticklabels([str(x) for x in labels], fontsize=6)
  fig.suptitle("input relevance for the explained position", fontsize=9)
  return fig


def heatmap(values, title: str, xlabel: str = "head", ylabel: str = "layer", cmap: str = "magma"):
  """[L, H] values as an annotated heatmap."""
  v = np.asarray(values, np.float64)
  fig, ax = plt.subplots(figsize=(0.6 * v.shape[1] + 1.5, 0.5 * v.shape[0] + 1.0))
  im = ax.imshow(v, cmap=cmap, aspect="auto")
  for (i, j), x in np.ndenumerate(v):
    ax.text(j, i, f"{x:.2g}", ha="center", va="center", fontsize=6, color="w")
  ax.set_xticks(range(v.shape[1]))
  ax.set_yticks(range(v.shape[0]))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax)
  return fig


def pruning_plot(curves: dict, metric: str):
  """Metric against % heads pruned: importance order vs random orders (mean +- std)."""
  f = 100 * np.asarray(curves["fractions"])
  fig, ax = plt.subplots(figsize=(4.5, 3.0))
  ax.plot(f, curves["importance"], "o-", label="least important first")
  mean, std = np.asarray(curves["random"]), np.asarray(curves["random_std"])
  ax.plot(f, mean, "s--", label="random order")
  ax.fill_between(f, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel("% heads pruned")
  ax.set_ylabel(metric)
  ax.legend(fontsize=8)
  return fig


def qk_scatter(emb, title: str = ""):
  """The layer x head grid of query-key joint embeddings (AttentionViz, Yeh et al., 2023):
  emb [L][H] of (queries [N, 2], keys [M, 2]); queries blue, keys orange."""
  n_layers, n_heads = len(emb), len(emb[0])
  fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.6 * n_heads + 0.6, 1.6 * n_layers + 0.5),
                           squeeze=False)
  for layer, row in enumerate(emb):
    for head, (q, k) in enumerate(row):
      ax = axes[layer, head]
      ax.scatter(q[:, 0], q[:, 1], s=2, c="tab:blue", label="query")
      ax.scatter(k[:, 0], k[:, 1], s=2, c="tab:orange", label="key")
      _label_cell(ax, layer, head)
  axes[0, 0].legend(fontsize=6, markerscale=3)
  fig.suptitle(title or "query-key joint embedding (PCA; blue queries, orange keys)", fontsize=9)
  return fig


__all__ = ["heatmap", "model_view", "pruning_plot", "qk_scatter", "token_overlay"]
