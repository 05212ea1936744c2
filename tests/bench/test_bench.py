"""The attention benchmark on tiny shapes: structure, columns and finite positive numbers
(never timings' values)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from attnlab.bench import attention as bench


@pytest.fixture(scope="module")
def df():
  return bench.run_attention_bench(["mha", "sliding_window", "gqa"], [40], batch=1, heads=2, head_dim=8,
                                   impls=["reference", "xla", "pallas"], repeats=1, window=8)


def test_columns_and_rows(df):
  assert list(df.columns) == bench.COLUMNS
  ops = df[df.kind == "op"]
  assert sorted(set(zip(ops.variant, ops.impl))) == [
      (v, i) for v in ("mha", "sliding_window") for i in ("pallas", "reference", "xla")]
  modules = df[df.kind == "module"]
  assert set(modules.variant) == {"gqa"} and set(modules.impl) == {"reference", "xla", "pallas"}
  baselines = df[df.kind == "baseline"]
  assert {"jax_dpa", "module"} <= set(baselines.impl)
  assert list(baselines[baselines.impl == "module"].variant) == ["mha"]
  assert (df.seq == 40).all() and (df.heads == 2).all()


def test_measured_rows_are_finite_and_positive(df):
  ran = df[df.note == ""]
  assert len(ran) >= 6
  for col in ("fwd_ms", "fwdbwd_ms"):
    assert all(math.isfinite(x) and x > 0 for x in ran[col]), col
  jax_rows = ran[ran.impl != "torch_sdpa"]
  for col in ("fwd_temp_mb", "fwd_peak_mb", "fwdbwd_temp_mb", "fwdbwd_peak_mb"):
    assert all(math.isfinite(x) and x >= 0 for x in jax_rows[col]), col
  measured = ran[ran.kind != "baseline"]
  assert all(math.isfinite(x) and x > 0 for x in measured.fwd_vs_jax)
  assert all(math.isfinite(x) and x > 0 for x in measured.fwdbwd_vs_jax)


def test_module_rows_are_relative_to_the_mha_module(df):
  mha = df[(df.kind == "baseline") & (df.impl == "module")].iloc[0]
  for r in df[(df.kind == "module") & (df.note == "")].itertuples():
    assert math.isclose(r.fwdbwd_vs_mha, r.fwdbwd_ms / mha.fwdbwd_ms)
    assert math.isclose(r.fwdbwd_temp_vs_mha, r.fwdbwd_temp_mb / mha.fwdbwd_temp_mb)
  assert df[df.kind == "op"].fwdbwd_vs_mha.isna().all()


def test_programs_over_the_memory_limit_are_compiled_but_not_run():
  df = bench.run_attention_bench(["gqa"], [32], batch=1, heads=2, head_dim=8, repeats=1, torch=False,
                                 max_memory_mb=1e-3)
  assert len(df) and df.fwd_ms.isna().all() and df.fwdbwd_ms.isna().all()
  assert all(n.startswith("not run: fwd needs") and "fwdbwd needs" in n for n in df.note)
  assert (df.fwdbwd_peak_mb > 0).all()


def test_all_expands_to_every_registered_variant():
  from attnlab.attention import VARIANTS
  names = bench.expand_variants(["mha", "all"])
  assert names[0] == "mha" and sorted(names) == sorted(VARIANTS.names()) and len(set(names)) == len(names)


def test_unrunnable_impl_is_a_noted_row(df):
  pallas = df[(df.kind == "op") & (df.impl == "pallas")]
  assert len(pallas) == 2 and all("pallas" in n.lower() and "cannot run" in n for n in pallas.note)
  assert pallas.fwd_ms.isna().all()


def test_cli_writes_json(tmp_path, capsys):
  parser = argparse.ArgumentParser()
  bench.register_cli(parser.add_subparsers(dest="bench_command"))
  out = tmp_path / "bench.json"
  args = parser.parse_args(["attention", "--variants", "mha", "--seq", "24", "--heads", "2", "--head-dim", "8",
                            "--impls", "xla", "--repeats", "1", "--no-torch", "--clock", "cpu", "--json", str(out)])
  assert args.func(args) == 0
  data = json.loads(out.read_text())
  assert data["environment"]["clock"] == "cpu"
  assert all(r["fwd_ms"] > 0 for r in data["rows"])
  assert data["environment"]["backend"] and {r["impl"] for r in data["rows"]} == {"jax_dpa", "xla"}
  assert "attention benchmark" in capsys.readouterr().out


def test_cli_rejects_unknown_variant(capsys):
  parser = argparse.ArgumentParser()
  bench.register_cli(parser.add_subparsers(dest="bench_command"))
  args = parser.parse_args(["attention", "--variants", "mhaa", "--seq", "8"])
  assert args.func(args) == 2
  err = capsys.readouterr().err
  assert "unknown attention variant 'mhaa'" in err and len(err.strip().splitlines()) == 1


def test_attn_hyperparameters_reach_the_variants_that_take_them():
  assert bench.parse_attn(["max_len=64", "window=8"]) == {"max_len": 64, "window": 8}
  with pytest.raises(ValueError, match="not a hyperparameter"):
    bench.parse_attn(["max_lenn=64"])
  # cosformer refuses a call longer than max_len; with --attn max_len it runs (gqa ignores it)
  short = bench.run_attention_bench(["cosformer"], [48], heads=2, head_dim=8, repeats=1, torch=False,
                                    attn={"max_len": 16})
  assert "max_len" in short[short.variant == "cosformer"].note.iloc[0]
  ok = bench.run_attention_bench(["cosformer", "gqa"], [48], heads=2, head_dim=8, repeats=1, torch=False,
                                 attn={"max_len": 48})
  assert (ok[ok.kind == "module"].note == "").all()
