"""In-context linear regression with one attention layer: single-head softmax, multi-head
softmax and linear attention (He et al., 2025, "In-context linear regression demystified";
the setting of Garg et al., 2022, "What can transformers learn in-context?").

Prompts of n pairs (x_i, w . x_i), x_i ~ N(0, I_d), a fresh w ~ N(0, I_d) per prompt; the
model predicts the query's y (attnlab.tasks.icl_regression). Error = squared error / d
(Garg et al.: predicting 0 scores 1, least squares 0 once n >= d), evaluated at every
n = 1..2N on prompts padded to 2N pairs.

Claims (He et al., 2025; stated in words and figures, not as a table, so the thresholds
below are ours):
  1. multi-head softmax attention beats single-head softmax and linear attention on the
     in-context prediction error at the training length N;
  2. softmax attention generalises to prompts longer than those seen in training (its
     error at 2N is no more than 0.02 above its error at N), linear attention does not
     (its error at 2N is at least 0.05 above its error at N).

Run one cell by hand (the reproduction runner drives the same config):
  attnlab train --config configs/icl_regression.py:variant=mha,heads=4,seed=0 --workdir runs/icl/mha4
  attnlab reproduce icl_linear_regression --scale small|paper
The error-vs-length plot and learning curves: python experiments/icl/plot.py WORKDIR
Format: see experiments/itransformer_etth1.py.
"""

import ml_collections

LENGTH_SLACK = 0.02   # softmax: nmse(2N) <= nmse(N) + this
LINEAR_RISE = 0.05    # linear: nmse(2N) >= nmse(N) + this


def get_experiment():
  """The experiment as a ConfigDict (format: experiments/itransformer_etth1.py)."""
  mha1, mha4 = {"variant": "mha", "heads": 1}, {"variant": "mha", "heads": 4}
  lin1 = {"variant": "linear", "heads": 1}
  return ml_collections.ConfigDict({
      "name": "icl_linear_regression",
      "config": "configs/icl_regression.py",
      "base_arg": "lengths=fixed,layers=1,mlp=none",
      "sweep": {"variant": ["mha", "linear"], "heads": [1, 4]},
      "seeds": 3,
      "scales": {
          "paper": {"args": {"heads": [1, 2, 4, 8]}, "seeds": 3,
                    "overrides": ["--config.task.dim=20", "--config.task.train_examples=40",
                                  "--config.task.eval_step=4", "--config.model.d_model=256",
                                  "--config.train.steps=20000", "--config.train.eval_every=1000"],
                    "note": "Garg et al.'s sizes (d = 20, N = 40 = 2d) with He et al.'s one-layer "
                            "attention-only models trained on prompts of one length N, heads 1, 2, "
                            "4, 8, 3 seeds, 20k Adam steps at batch 64, evaluated up to 2N = 80 (He et al.'s own "
                            "d, N and step count were not checked against their paper here)"},
          "small": {"args": {}, "seeds": 2,
                    "overrides": ["--config.train.eval_every=250"],
                    "note": "d = 5, N = 20, evaluated at n = 1..40; 1-layer attention-only, "
                            "d_model 64; 3000 Adam steps (lr 1e-3, batch 64); 2 seeds"},
      },
      "metrics": ["eval/nmse_train_len", "eval/nmse_max_len", "eval/length_growth",
                  "eval/length_gain"],
      "cells": [
          {"point": {}, "published": {}},
          {"point": mha1, "published": {"eval/length_gain": 0.0}},
          {"point": mha4, "published": {"eval/length_gain": 0.0}},
          {"point": lin1, "published": {"eval/length_growth": LINEAR_RISE}},
          {"point": {"variant": "linear", "heads": 4},
           "published": {"eval/length_growth": LINEAR_RISE}},
      ],
      "claims": [
          {"metric": "eval/nmse_train_len", "kind": "improves", "over": mha1, "by": mha4,
           "tolerance": 0.0, "note": "claim 1: multi-head beats single-head softmax at n = N"},
          {"metric": "eval/nmse_train_len", "kind": "improves", "over": lin1, "by": mha4,
           "tolerance": 0.0, "note": "claim 1: multi-head softmax beats linear attention at n = N"},
          {"metric": "eval/length_gain", "kind": "at_least", "tolerance": LENGTH_SLACK,
           "note": "claim 2: softmax's error at 2N is at most 0.02 above its error at N"},
          {"metric": "eval/length_growth", "kind": "at_least", "tolerance": 0.0,
           "note": "claim 2: linear attention's error at 2N is at least 0.05 above its error at N"},
      ],
      "source": "He et al. 2025 (arXiv 2503.12734, ICML 2025), as stated in its abstract: multi-head softmax beats single-head "
                "and approaches the Bayes-optimal error; softmax attention generalises to longer "
                "prompts than linear transformers; setting of Garg et al. 2022",
  })
