"""iTransformer on ETTh1 (Liu et al., ICLR 2024, Table 10 / TSLib): L = 96, features M.

Run one cell by hand (the reproduction runner drives the same config):
  attnlab train --config configs/forecast.py:model=itransformer,data=../shared/data/ETTh1.csv,horizon=96,seed=0 \
      --workdir runs/itransformer_etth1/h96_s0
  attnlab reproduce itransformer_etth1 [--data PATH] [--seeds N] [--scale small|paper]

Format (shared by every experiment file; data only):
  config: the config file and its base argument; data_arg: the argument a `--data PATH`
  sets; sweep: {argument: values} (the Cartesian product, one run per point and seed);
  seeds; scales: {name: {"args": {...}, "overrides": [--config.* ...], "note": ...}};
  metrics: the result keys compared; cells: one per table cell, {"point": {...},
  "published": {metric: value}}; claims: [{"metric", "kind": "relative_error" |
  "improves", "tolerance", ...}] checked per cell on the mean over seeds; source.
"""

import ml_collections

PUBLISHED = {  # horizon: (MSE, MAE); iTransformer paper, ETTh1, L = 96
    96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458), 720: (0.503, 0.491)}
PATCHTST = {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466), 720: (0.500, 0.488)}
TIMEXER = {96: (0.386, 0.404), 192: (0.433, 0.438), 336: (0.467, 0.452), 720: (0.495, 0.478)}


def get_experiment():
  """The experiment as a ConfigDict (see the module docstring for the format)."""
  return ml_collections.ConfigDict({
      "name": "itransformer_etth1",
      "config": "configs/forecast.py",
      "base_arg": "model=itransformer,data=../shared/data/ETTh1.csv",
      "data_arg": "data",
      "sweep": {"horizon": [96, 192, 336, 720]},
      "seeds": 3,
      "scales": {
          "paper": {"args": {}, "overrides": [],
                    "note": "iTransformer's scripts/multivariate_forecasting/ETT/iTransformer_ETTh1.sh: "
                            "2 layers, d_model = d_ff = 256 (H 96, 192) / 512 (H 336, 720), 8 heads, "
                            "dropout 0.1, GELU, batch 32, Adam 1e-4, 10 epochs, patience 3, "
                            "lr halved each epoch after the second"},
          "small": {"args": {"horizon": [96]}, "overrides": [], "seeds": 1,
                    "note": "H = 96 only, one seed (about 5 minutes on one CPU core)"},
      },
      "metrics": ["test/mse", "test/mae"],
      "cells": [{"point": {"horizon": h}, "published": {"test/mse": mse, "test/mae": mae}}
                for h, (mse, mae) in PUBLISHED.items()],
      "claims": [{"metric": "test/mse", "kind": "relative_error", "tolerance": 0.05,
                  "note": "within 5% of the published MSE at every horizon (aim: 2% on 3 seeds)"},
                 {"metric": "test/mae", "kind": "relative_error", "tolerance": 0.05}],
      "reference": {"patchtst": {str(h): list(v) for h, v in PATCHTST.items()},
                    "timexer": {str(h): list(v) for h, v in TIMEXER.items()}},
      "source": "Liu et al. 2024, iTransformer, Table 10 (ETTh1, L = 96); PatchTST as tabulated "
                "there; TimeXer: Time-Series-Library re-run",
  })
