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


def patch_overlay(rows: dict, image, grid: tuple[int, int]):
  """Relevance over a vision run's patch grid, drawn over the input image, side by side with
  it: rows {name: [gh * gw] relevance of each patch (row-major, the vit model's order)};
  image [H, W] or [H, W, C] (channels averaged when not 1 or 3); grid (gh, gw). Each map is
  scaled to its max and stretched over the image (bilinear upsampling, 50% opaque)."""
  img = np.asarray(image, np.float64)
  if img.ndim == 3 and img.shape[-1] != 3:
    img = img.mean(-1)
  img = (img - img.min()) / ((img.max() - img.min()) or 1.0)
  h, w = img.shape[:2]
  extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # the patch grid covers the whole image
  fig, axes = plt.subplots(1, len(rows) + 1, figsize=(2.2 * (len(rows) + 1), 2.5), squeeze=False)
  axes = axes[0]
  axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
  axes[0].set_title("input", fontsize=8)
  for ax, (name, r) in zip(axes[1:], rows.items()):
    r = np.asarray(r, np.float64).reshape(grid)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.imshow(r / (np.abs(r).max() or 1.0), cmap="jet", vmin=0, vmax=1, alpha=0.5, extent=extent,
              interpolation="bilinear")
    ax.set_title(name, fontsize=8)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"input relevance over the {grid[0]} x {grid[1]} patch grid", fontsize=9)
  return fig


def variate_overlay(rows: dict, names, matrix=None, matrix_title: str = ""):
  """Relevance over a time-series run's variate tokens: rows {name: [C] relevance of each
  variate} as grouped horizontal bars labelled with the variate names [C]; with matrix
  [C, C] (rows: the variate whose forecast is explained, columns: variates) a heatmap beside."""
  names = [str(n) for n in names]
  c = len(names)
  panels = 1 + (matrix is not None)
  fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels + 0.6, 0.32 * c + 1.4), squeeze=False)
  ax = axes[0, 0]
  height = 0.8 / max(len(rows), 1)
  for i, (name, r) in enumerate(rows.items()):
    ax.barh(np.arange(c) + (i - (len(rows) - 1) / 2) * height, np.asarray(r, np.float64), height, label=name)
  ax.set_yticks(range(c))
  ax.set_yticklabels(names, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel("relevance", fontsize=8)
  ax.legend(fontsize=7)
  if matrix is not None:
    ax = axes[0, 1]
    im = ax.imshow(np.asarray(matrix, np.float64), cmap="Reds", interpolation="nearest")
    ax.set_xticks(range(c))
    ax.set_xticklabels(names, fontsize=6, rotation=90)
    ax.set_yticks(range(c))
    ax.set_yticklabels(names, fontsize=6)
    ax.set_title(matrix_title, fontsize=8)
    fig.colorbar(im, ax=ax)
  fig.suptitle("input relevance over the variate tokens", fontsize=9)
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


__all__ = ["heatmap", "model_view", "patch_overlay", "pruning_plot", "qk_scatter", "token_overlay",
           "variate_overlay"]
