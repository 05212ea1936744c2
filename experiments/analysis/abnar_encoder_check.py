"""Abnar & Zuidema (2020)'s claim on a trained non-causal ENCODER classifier: do rollout and
flow agree better than raw attention with what the model uses?

  python experiments/analysis/abnar_encoder_check.py RUN [RUN ...] [--inputs 32]

Each RUN is a classifier workdir (e.g. experiments/analysis/agreement_config.py; any
variant whose weights are non-negative). The explained quantity is the log-odds of the
target class (log p / (1 - p)) of the mean-pooled classifier, so an input token's
attribution is the mean over all query rows i (the pooled positions) of, for each input
position j:
  raw      the last layer's head-mean attention A_L[i, j]
  rollout  `attnlab.analysis.rollout.rollout` [i, j]
  flow     `attnlab.analysis.rollout.flow` [i, j] (every row solved)
against two references:
  ablation leave-one-token-out: the drop of the log-odds when token j is replaced by
           the padding id 0 (masked from attention and pooling where the variant takes the
           key-padding mask, so the token is removed)
  grad     input gradient x input: |sum_d d(log-odds)/de_jd * e_jd| on the token embeddings
Spearman's rho over the T positions, per input, averaged over the inputs (NaN rows, from
constant rankings, skipped; ± its standard error over the inputs), and how often each attribution's top token is the reference's
top token. Also the accuracy (argmax) on those inputs. Prints markdown tables and JSON. (The causal-decoder version on the induction task is abnar_check.py, whose
embedding hook this reuses.)
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from abnar_check import _apply_with_embedding_delta, _log, load_run, print_table, run_all
from attnlab.analysis import capture as C
from attnlab.analysis.analyze_cli import _backbone_cfg
from attnlab.analysis.rollout import flow, rollout


def _logp_class(logits, labels):
  """The log-odds log(p / (1 - p)) of the label: logits [B, C], labels int [B] -> [B].
  logit_y - logsumexp of the other logits: unlike log p, it does not flatten to about
  -1e-5 (below float32's resolution for a token's effect) on a model this confident."""
  x = logits.astype(jnp.float32)
  own = jnp.take_along_axis(x, labels[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, x.shape[-1], dtype=bool), -jnp.inf, x)
  return own - jax.nn.logsumexp(others, axis=-1)


def check_run(workdir: str, n: int) -> dict:
  """One run's row: accuracy on the n inputs and the six mean Spearman correlations."""
  config, run, step, variables, batch = load_run(workdir, n)
  tokens, labels = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
  b, t = tokens.shape
  model = run.model
  backbone = _backbone_cfg(model, config)
  reason = C.refusal(C.layer_infos(backbone), kinds=("probability", "nonnegative"))
  if reason:
    return {"workdir": workdir, "refused": reason}

  _log("capture")
  captured = jax.device_get(jax.jit(lambda v, x: C.capture(model, v, x))(variables, tokens))
  weights = captured["weights"]
  accuracy = float(np.mean(np.argmax(np.asarray(captured["outputs"]), -1) == labels))
  # leave-one-token-out: row (i, j) = input i with token j replaced by 0
  masked = np.repeat(tokens[:, None], t, axis=1)
  masked[:, np.arange(t), np.arange(t)] = 0
  logp = jax.jit(lambda v, x, y: _logp_class(model.apply(v, x, deterministic=True), y))
  base = np.asarray(logp(variables, tokens, labels))
  abl = np.asarray(logp(variables, masked.reshape(-1, t), np.repeat(labels, t))).reshape(b, t)
  ablation = base[:, None] - abl
  _log("gradient x input")

  def target_sum(delta, v, x, y):
    logits, e = _apply_with_embedding_delta(model, v, x, delta)
    return jnp.sum(_logp_class(logits, y)), e

  grads, emb = jax.jit(jax.grad(target_sum, has_aux=True))(
      jnp.zeros((b, t, backbone.d_model)), variables, tokens, labels)
  gxi = np.abs(np.sum(np.asarray(grads) * np.asarray(emb), axis=-1))

  _log("rollout and flow")
  scores = {"raw": [], "rollout": [], "flow": []}
  for i in range(b):
    one = [np.asarray(w[i]) for w in weights]
    scores["raw"].append(one[-1].mean(0).mean(0))
    scores["rollout"].append(rollout(one).mean(0))
    scores["flow"].append(flow(one).mean(0))
  out = {"workdir": workdir, "variant": ",".join(backbone.layer_variants), "step": int(step), "inputs": b,
         "accuracy": accuracy}
  for ref_name, ref in (("ablation", ablation), ("grad", gxi)):
    for name, s in scores.items():
      rhos = [spearmanr(s[i], ref[i]).statistic for i in range(b)]
      out[f"{name}_vs_{ref_name}"] = float(np.nanmean(rhos))
      out[f"{name}_vs_{ref_name}_se"] = float(np.nanstd(rhos) / np.sqrt(np.sum(np.isfinite(rhos))))
      out[f"{name}_top1_{ref_name}"] = float(np.mean(np.argmax(s, -1) == np.argmax(ref, -1)))
  return out


def main(argv=None):
  rows = run_all(check_run, argv)
  print_table(rows, "accuracy", "accuracy", cell=lambda r, c: f"{r[c]:.3f} ± {r[c + '_se']:.3f}")
  top = [f"{m}_top1_{r}" for r in ("ablation", "grad") for m in ("raw", "rollout", "flow")]
  print("\nfraction of inputs whose top token is the reference's top token\n| run | " + " | ".join(top) + " |")
  print("|" + "---|" * (1 + len(top)))
  for r in rows:
    if "refused" not in r:
      print(f"| {r['workdir']} | " + " | ".join(f"{r[c]:.2f}" for c in top) + " |")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
