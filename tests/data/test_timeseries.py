"""attnlab.data.timeseries: TSLib's splits, scaler, time features and windows, by hand."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from attnlab.data import timeseries as ts

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
ETTH1 = SHARED / "ETTh1.csv"


def small_frame(rows=30):
  """date (hourly from 2021-03-07 13:00), OT = 2 t + 1 first (not last), a = t."""
  t = np.arange(rows, dtype=np.float64)
  return pd.DataFrame({"date": pd.date_range("2021-03-07 13:00", periods=rows, freq="h"),
                       "OT": 2 * t + 1, "a": t})


def write(tmp_path, frame, name="small.csv"):
  path = tmp_path / name
  frame.to_csv(path, index=False)
  return str(path)


def test_ratio_split_scaler_and_windows_by_hand(tmp_path):
  d = ts.load(write(tmp_path, small_frame()), seq_len=2, horizon=1)
  # N = 30: n_train = int(21.0) = 21, n_test = int(6.0) = 6, n_val = 3; val/test start L = 2 early.
  assert d.borders == [(0, 21), (19, 24), (22, 30)]
  assert d.columns == ["a", "OT"]  # the target is moved last
  assert [d.num_windows(s) for s in ts.SPLITS] == [19, 3, 6]  # rows - L - H + 1
  # scaler on train rows 0..20 only: a has mean 10 and std sqrt((21^2 - 1) / 12) (ddof 0).
  std = np.sqrt((21 ** 2 - 1) / 12)
  np.testing.assert_allclose(d.scaler.mean, [10.0, 21.0])
  np.testing.assert_allclose(d.scaler.std, [std, 2 * std])
  w = d.window("val", 1)  # val rows 19..23: inputs rows 20, 21, target row 22
  np.testing.assert_allclose(w["series"][:, 0], (np.array([20, 21]) - 10) / std, rtol=1e-6)
  np.testing.assert_allclose(w["targets"], [[(22 - 10) / std, (45 - 21) / (2 * std)]], rtol=1e-6)
  last = d.windows("test", [5])  # the last test window ends at the last row
  np.testing.assert_allclose(last["targets"][0, 0, 0], (29 - 10) / std, rtol=1e-6)


def test_features_s_and_ms(tmp_path):
  path = write(tmp_path, small_frame())
  s = ts.load(path, seq_len=3, horizon=2, features="S")
  assert s.columns == ["OT"] and s.target_columns == ["OT"]
  assert s.window("train", 0)["series"].shape == (3, 1)
  ms = ts.load(path, seq_len=3, horizon=2, features="MS")
  w = ms.window("train", 4)
  assert w["series"].shape == (3, 2) and w["targets"].shape == (2, 1)
  np.testing.assert_allclose(w["targets"][:, 0], w["series"][-1, 1] + np.array([1, 2]) / ms.scaler.std[0],
                             rtol=1e-5)


def test_ett_borders():
  assert ts.split_borders(17420, 96, "ett_hour") == [(0, 8640), (8544, 11520), (11424, 14400)]
  assert ts.split_borders(69680, 96, "ett_minute") == [(0, 34560), (34464, 46080), (45984, 57600)]
  assert ts.split_kind("/x/ETTh2.csv") == "ett_hour" and ts.split_kind("ETTm1.csv") == "ett_minute"
  assert ts.split_kind("weather.csv") == "ratio"


def test_time_features_hourly_and_minutely():
  dates = pd.DatetimeIndex(["2021-03-07 13:45"])  # a Sunday (weekday 6), day of year 66
  np.testing.assert_allclose(ts.time_features(dates, "h")[0],
                             [13 / 23 - 0.5, 0.5, 6 / 30 - 0.5, 65 / 365 - 0.5], rtol=1e-6)
  np.testing.assert_allclose(ts.time_features(dates, "t")[0, 0], 45 / 59 - 0.5, rtol=1e-6)
  assert ts.infer_freq(pd.date_range("2020", periods=5, freq="15min")) == "t"
  assert ts.infer_freq(pd.date_range("2020", periods=5, freq="h")) == "h"


def test_generated_series_drivers_lead_the_target():
  a, b = ts.generate_series(2000, seed=1), ts.generate_series(2000, seed=1)
  pd.testing.assert_frame_equal(a, b)
  assert list(a.columns) == ["date", "x0", "x1", "x2", "OT"] and not a.isna().any().any()
  x = a[["x0", "x1", "x2"]].to_numpy().sum(1)
  y = a["OT"].to_numpy() - np.polyval(np.polyfit(np.arange(2000), a["OT"], 1), np.arange(2000))
  lead = np.corrcoef(y[6:], x[:-6])[0, 1]
  assert lead > np.corrcoef(y, x)[0, 1] + 0.05


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["OT"]), "missing column 'OT'"),
    (lambda f: f.assign(a=f["a"].where(f.index != 7)), "NaN value"),
    (lambda f: f.assign(date=["not a date"] * len(f)), "does not parse as dates"),
    (lambda f: f.head(10), "shorter than seq_len \\+ horizon"),
])
def test_bad_input_one_line(tmp_path, mutate, message):
  path = write(tmp_path, mutate(small_frame()))
  with pytest.raises(ValueError, match=message) as e:
    ts.load(path, seq_len=4, horizon=8)
  assert "\n" not in str(e.value)


def test_horizon_longer_than_a_split(tmp_path):
  with pytest.raises(ValueError, match="the val split has 7 rows") as e:
    ts.load(write(tmp_path, small_frame(40)), seq_len=3, horizon=5)  # val rows [25, 32)
  assert "horizon 5 is too long" in str(e.value)


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="does not exist"):
    ts.load("/nonexistent/x.csv", seq_len=4, horizon=4)


def test_import_is_numpy_pandas_only():
  code = ("import sys, attnlab.data.timeseries; "
          "bad = [m for m in ('flax', 'jax') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_etth1_window_counts():
  if not ETTH1.exists():
    msg = f"{ETTH1} is absent (the shared data folder is not on this machine)"
    print(msg)
    pytest.skip(msg)
  for horizon, windows in ((96, 2785), (192, 2689), (336, 2545), (720, 2161)):
    d = ts.load(str(ETTH1), seq_len=96, horizon=horizon)
    assert d.borders == [(0, 8640), (8544, 11520), (11424, 14400)]
    assert d.num_windows("test") == windows
    assert d.num_windows("val") == windows
    assert d.num_windows("train") == 8640 - 96 - horizon + 1
  assert d.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
  np.testing.assert_allclose(d.values["train"].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(d.values["train"].std(0), 1, atol=1e-4)
  assert d.values["test"][:, -1].mean() < -1.0  # OT is lower in the test months: no refit on them
  assert os.path.basename(str(ETTH1)) == "ETTh1.csv"
