"""`attnlab analyze --workdir RUN [--inputs N] [--methods ...]`: look inside a trained run.

Loads RUN/config.json and RUN's latest checkpoint (as `train.trainer.evaluate` does),
takes the first N eval examples, runs the methods through the analysis hooks
(`analysis.capture`) and writes RUN/analysis/report.html (self-contained, PNGs embedded)
and RUN/analysis/<method>.json. Methods:
  maps        per-layer, per-head maps (model view of input 0), head statistics, pattern
              scores (previous-token, duplicate, prefix-matching), massive activations
  rollout     attention rollout and flow (Abnar & Zuidema, 2020) for the explained position
  relevancy   gradient-weighted relevancy (Chefer et al., 2021) for the explained position
  heads       head importance |dL/dxi| (Michel et al., 2019), single-head ablation and
              importance-ordered vs random pruning curves
  qk          query-key joint embedding per head (AttentionViz, Yeh et al., 2023): PCA of
              q and k (phi(q), phi(k) for linear variants) of all inputs' positions
The explained position is the last one the task weights in input 0 (e.g. the induction
query). A method a variant cannot serve is refused with its one-line reason, in the report
and in its JSON; bad arguments exit 2 before anything compiles.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from attnlab.errors import INPUT_ERRORS, fail

METHODS = ("maps", "rollout", "relevancy", "heads", "qk")
MAX_LENGTH = 512  # the capture path materialises [B, H, T, T] per layer
PRUNE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def register_cli(sub) -> None:
  """Adds the `analyze` subcommand to the `attnlab` parser's subparsers."""
  p = sub.add_parser("analyze", help="attention maps, rollout, relevancy, head importance of a run; HTML report")
  p.add_argument("--workdir", required=True, help="a run's directory (config.json, checkpoints/)")
  p.add_argument("--inputs", type=int, default=8, help="eval examples to analyse (default 8)")
  p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  p.set_defaults(func=cmd_analyze)


def parse_methods(text: str) -> tuple[str, ...]:
  """"maps,heads" -> ("maps", "heads"); an unknown name is a ValueError."""
  names = tuple(m.strip() for m in text.split(",") if m.strip())
  bad = [m for m in names if m not in METHODS]
  if bad or not names:
    raise ValueError(f"--methods: unknown {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(METHODS)}")
  return names


def load_run_config(workdir: str):
  """RUN/config.json as an ml_collections ConfigDict (FileNotFoundError if absent)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be a run directory written by `attnlab train`")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def cmd_analyze(args) -> int:
  """The `analyze` subcommand: checks, then `analyze(...)`; prints the report's path."""
  from attnlab.train.trainer import setup
  try:
    methods = parse_methods(args.methods)
    if args.inputs < 1:
      raise ValueError(f"--inputs must be >= 1, got {args.inputs}")
    config = load_run_config(args.workdir)
    run = setup(config)
    from attnlab.train.checkpoint import Checkpointer
    checkpointer = Checkpointer(os.path.abspath(args.workdir), keep=None)
    step = checkpointer.latest_step() if args.step is None else args.step
    checkpointer.close()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {os.path.join(args.workdir, 'checkpoints')}")
  except INPUT_ERRORS as e:
    return fail(str(e))
  path = analyze(run, args.workdir, step=step, inputs=args.inputs, methods=methods)
  print(path)
  return 0


def _first_examples(batches: list, n: int) -> dict:
  """The first n examples of the eval batches, one dict of numpy arrays."""
  import jax
  parts, have = [], 0
  for b in batches:
    parts.append(jax.tree.map(np.asarray, b))
    have += int(np.shape(jax.tree.leaves(b)[0])[0])
    if have >= n:
      break
  joined = jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *parts)
  return joined


def _backbone_cfg(model, config):
  from attnlab.models import transformer_config
  from attnlab.models.transformer import TransformerConfig
  cfg = getattr(model, "cfg", None)
  return cfg if isinstance(cfg, TransformerConfig) else transformer_config(config.model)


def _explained_position(batch) -> int:
  """The last position the task weights in input 0 (the last position if none)."""
  w = np.asarray(batch.get("weights", np.ones((1, 1))))
  w = w.reshape(w.shape[0], -1)[0]
  nz = np.nonzero(w > 0)[0]
  return int(nz[-1]) if len(nz) else len(w) - 1


def _target_score(outputs, batch, pos: int, fallback):
  """The logit of the target at the explained position of input 0: outputs [1, T, V] with
  targets [1, T] (token tasks) or [1, C] with targets [1] (classifiers); else fallback(outputs)."""
  targets = batch.get("targets")
  if targets is not None and outputs.ndim == 3 and targets.ndim == 2:
    return outputs[0, pos, targets[0, pos]]
  if targets is not None and outputs.ndim == 2 and targets.ndim == 1:
    return outputs[0, targets[0]]
  return fallback(outputs)


def _positions(model, variables, inputs) -> int:
  """T, the attention positions of the model on `inputs` (an image's patches, a forecaster's
  variate tokens, a sequence's tokens): from the shapes an analysis pass would sow (traced,
  not run), else the inputs' second axis."""
  import jax
  from attnlab.analysis.capture import capture
  shapes = jax.eval_shape(lambda v, x: capture(model, v, x), variables, inputs)
  for sown in (shapes["weights"], shapes["hidden"]):
    if sown:
      return int(sown[0].shape[-1] if sown is shapes["weights"] else sown[0].shape[1])
  return int(np.shape(jax.tree.leaves(inputs)[0])[1])


def restore_variables(run, workdir: str, step: int):
  """The `model.apply` variables of checkpoint `step` of `workdir`."""
  import jax
  import flax.linen as nn
  from attnlab.train.checkpoint import Checkpointer
  checkpointer = Checkpointer(os.path.abspath(workdir), keep=None)
  try:
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      state = checkpointer.restore(run.abstract, step=step)
  finally:
    checkpointer.close()
  return jax.device_get(state.variables())


def analyze(run, workdir: str, *, step: int, inputs: int, methods=METHODS) -> str:
  """Runs `methods` on the first `inputs` eval examples of checkpoint `step`; writes
  WORKDIR/analysis/report.html and <method>.json; returns the report's path."""
  import jax
  import jax.numpy as jnp

  from attnlab.analysis import capture as C
  from attnlab.analysis import figures, head_importance, head_stats, overlays, patterns, qk_embedding
  from attnlab.analysis import html_report as W
  from attnlab.analysis.relevancy import relevancy
  from attnlab.analysis.rollout import MAX_FLOW_LENGTH, flow, rollout

  out_dir = os.path.join(workdir, "analysis")
  os.makedirs(out_dir, exist_ok=True)
  model, task = run.model, run.task
  variables = restore_variables(run, workdir, step)
  batch = _first_examples(run.eval_batches, inputs)
  batch = jax.tree.map(jnp.asarray, batch)
  backbone = _backbone_cfg(model, run.config)
  infos = C.layer_infos(backbone)
  tokens = batch["inputs"]  # an array, or a dict of arrays (forecasting: series, marks)
  token_like = not isinstance(tokens, dict) and tokens.ndim == 2 and tokens.dtype.kind in "iu"
  t = _positions(model, variables, tokens)
  pos = _explained_position(batch)
  labels = tokens[0] if token_like else np.arange(t)
  view = overlays.input_view(run, jax.tree.map(lambda a: np.asarray(a[0]), tokens), t, pos, labels)

  def loss_of(outputs):
    return task.loss_fn(outputs, batch)[0]

  metric_name = "accuracy" if "accuracy" in jax.eval_shape(
      lambda v, x: task.metrics(model.apply(v, x), batch), variables, batch["inputs"]) else "loss"

  def metric_of(outputs):
    s, c = task.metrics(outputs, batch)[metric_name]
    return jnp.sum(s) / jnp.maximum(jnp.sum(c), 1.0)

  results: dict[str, Any] = {"step": int(step), "inputs": int(np.shape(jax.tree.leaves(tokens)[0])[0]),
                             "length": t, "explained_position": pos, "explained": view.what,
                             "positions": view.kind,
                             "position_labels": [str(x) for x in view.labels], "layers": [vars(i) for i in infos]}
  sections = [W.paragraph(f"run {os.path.abspath(workdir)}, checkpoint step {step}, "
                          f"{results['inputs']} eval inputs of length {t}; layers: "
                          + ", ".join(f"{i.variant} ({i.weight_kind})" for i in infos))]
  captured = None
  refuse_all = C.refusal(infos) or (f"sequence length {t} exceeds {MAX_LENGTH} (the capture path "
                                    f"materialises [B, H, T, T])" if t > MAX_LENGTH else None)
  if refuse_all is None and set(methods) & {"maps", "rollout"}:
    captured = jax.device_get(jax.jit(lambda v, x: C.capture(model, v, x))(variables, batch["inputs"]))
  weights = None if captured is None else [np.asarray(w) for w in captured["weights"]]

  def refused(method, reason):
    results[method] = {"refused": reason}
    sections.append(W.section(method, W.paragraph(f"refused: {reason}", "refused")))

  for method in methods:
    if refuse_all is not None:
      refused(method, refuse_all)
      continue
    if method == "maps":
      stats = head_stats.head_statistics(weights)
      pats = patterns.scores(weights, tokens) if token_like else {}
      massive = head_stats.massive_activations(captured["hidden"])
      top = head_stats.top_token_mass(weights, k=1)
      results["maps"] = {**{k: v.tolist() for k, v in stats.items()},
                         **{f"pattern_{k}": v.tolist() for k, v in pats.items()},
                         "top1_token_mass": top.tolist(), "massive": {k: v.tolist() for k, v in massive.items()}}
      shown = [k for k in pats if k not in stats]  # previous_token is in both (same number)
      rows = []
      for layer in range(len(weights)):
        for head in range(weights[layer].shape[1]):
          rows.append([layer, head] + [float(stats[k][layer, head]) for k in stats]
                      + [float(pats[k][layer, head]) for k in shown] + [float(top[layer, head])])
      header = ["layer", "head"] + list(stats) + [f"{k} pattern" for k in shown] + ["top-1 token mass"]
      mrows = [[i, float(massive["max"][i]), float(massive["median"][i]), float(massive["ratio"][i]),
                int(massive["position"][i])] for i in range(len(captured["hidden"]))]  # none: no hidden sown
      parts = [W.figure_tag(figures.model_view([w[0] for w in weights]), "model view"),
               W.table(header, rows),
               W.paragraph("massive activations: largest |hidden| after each block against the median"
                           if mrows else "massive activations: this model's blocks do not sow their hidden states"),
               W.table(["layer", "max |h|", "median |h|", "ratio", "position (input 0)"], mrows)]
      if "prefix_matching" in pats:
        parts.insert(1, W.figure_tag(figures.heatmap(pats["prefix_matching"], "prefix-matching score"),
                                     "prefix-matching heatmap"))
      sections.append(W.section("maps", *parts))
    elif method == "rollout":
      reason = C.refusal(infos, kinds=("probability", "nonnegative"))
      if reason:
        refused(method, reason)
        continue
      one = [w[0] for w in weights]
      r = rollout(one)
      res = {"rollout": view.explain(r).tolist(), "raw_last_layer": view.explain(one[-1].mean(0)).tolist()}
      rows = {"raw (last layer)": res["raw_last_layer"], "rollout": res["rollout"]}
      if t <= MAX_FLOW_LENGTH:
        res["flow"] = view.explain(flow(one, rows=view.rows)).tolist()
        rows["flow"] = res["flow"]
      else:
        res["flow_refused"] = f"sequence length {t} exceeds {MAX_FLOW_LENGTH} (flow solves T^2 max-flow problems)"
      results["rollout"] = res
      sections.append(W.section("rollout", W.paragraph(view.what),
                                W.figure_tag(view.draw(rows, {"rollout": r}), f"rollout {view.kind} overlay")))
    elif method == "relevancy":
      reason = C.refusal(infos, kinds=("probability", "nonnegative"))
      if reason:
        refused(method, reason)
        continue
      x0 = jax.tree.map(lambda a: a[:1], batch)

      def target(outputs):  # Chefer et al. explain the target class's score: its logit
        return _target_score(outputs, x0, pos, lambda o: task.loss_fn(o, x0)[0])

      cap, grads = jax.device_get(jax.jit(lambda v, x: C.weight_gradients(model, v, x, target))(
          variables, x0["inputs"]))
      rel = relevancy([w[0] for w in cap["weights"]], [g[0] for g in grads])
      beyond = view.explain(rel - np.eye(t))  # without the identity R starts from
      results["relevancy"] = {"relevancy": view.explain(rel).tolist()}
      sections.append(W.section(
          "relevancy", W.paragraph(f"{view.what}: gradient of the target's logit (of the loss where the "
                                   "outputs are not logits); shown without the identity R starts from"),
          W.figure_tag(view.draw({"relevancy - I": beyond}, {"relevancy - I": rel - np.eye(t)}),
                       f"relevancy {view.kind} overlay")))
    elif method == "heads":
      gates0 = jax.device_get(C.unit_head_gates(model, variables, batch["inputs"]))
      n_layers, n_heads = C.gates_array(gates0).shape
      forward = lambda g: C.gated_apply(model, variables, batch["inputs"], g)  # noqa: E731
      grad, metric = head_importance.jit_gate_fns(forward, loss_of, metric_of,
                                                  lambda g: C.gates_from_array(gates0, g))
      imp = head_importance.importance(grad, n_layers, n_heads)
      base = float(metric(np.ones((n_layers, n_heads), np.float32)))
      abl = head_importance.ablation(metric, n_layers, n_heads)
      curves = head_importance.pruning_curves(metric, imp, PRUNE_FRACTIONS)
      name = metric_name
      results["heads"] = {"metric": name, "baseline": base, "importance": imp.tolist(),
                          "ablation": abl.tolist(),
                          **{f"prune_{k}": np.asarray(v).tolist() for k, v in curves.items()}}
      sections.append(W.section(
          "heads", W.paragraph(f"metric: eval {name} on the {results['inputs']} inputs; baseline {base:.4g}"),
          W.figure_tag(figures.heatmap(imp, "head importance |dL/dxi| (l2-normalised per layer)"), "importance"),
          W.figure_tag(figures.heatmap(abl - base, f"{name} change when the head is removed", cmap="RdBu_r"),
                       "ablation"),
          W.figure_tag(figures.pruning_plot(curves, name), "pruning curves")))
    elif method == "qk":
      qk = jax.device_get(jax.jit(lambda v, x: qk_embedding.capture_qk(model, v, x))(variables, batch["inputs"]))
      if len(qk) != len(infos):
        refused(method, f"{len(infos) - len(qk)} of {len(infos)} layers have no query-key hook")
        continue
      emb = qk_embedding.embeddings(qk)
      results["qk"] = {"queries": [[q.tolist() for q, _ in row] for row in emb],
                       "keys": [[k.tolist() for _, k in row] for row in emb]}
      sections.append(W.section("qk", W.paragraph(
          f"all {results['inputs']} inputs' positions; keys translated to the queries' centroid and "
          "norm-matched, then a joint PCA per head"), W.figure_tag(figures.qk_scatter(emb), "qk embedding")))
  for method in methods:
    with open(os.path.join(out_dir, f"{method}.json"), "w") as f:
      json.dump(results.get(method, {}), f)
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump({k: v for k, v in results.items() if k not in METHODS}, f, indent=1)
  path = os.path.join(out_dir, "report.html")
  with open(path, "w") as f:
    f.write(W.page(f"attnlab analyze: {os.path.basename(os.path.abspath(workdir))}", sections))
  return path


__all__ = ["METHODS", "analyze", "cmd_analyze", "load_run_config", "parse_methods", "register_cli"]
