"""Time-series forecasting data, Time-Series-Library's protocol (numpy / pandas only).

A CSV in the ETT / Time-Series-Library layout (a `date` column, the variables, a
target column, default `OT`) becomes three scaled splits and their sliding windows:

- features: "M" (all variables in, all out), "S" (target in, target out), "MS" (all
  in, the target out). Columns are ordered `[others..., target]` (TSLib's
  `Dataset_Custom` order; the ETT files already end with `OT`), so the target is the
  last input column.
- splits (rows): ETT hourly files (name starting `ETTh`) [0, 8640), [8640 - L, 11520),
  [11520 - L, 14400); ETT 15-minute files (`ETTm`) the same months x 4; any other file
  70 / 10 / 20 by time (TSLib: n_train = int(0.7 N), n_test = int(0.2 N), the rest val;
  val and test start L rows early so their first window ends at the split boundary).
- scaler: z-score per column (numpy std, ddof 0 as sklearn's StandardScaler), fitted on
  the train rows only, applied to every row.
- time features (`timeF`, TSLib's `time_features`): hourly data: hour/23, weekday/6,
  (day-1)/30, (day of year-1)/365, each minus 0.5; 15-minute data adds minute/59 first.
- windows: window i of a split is inputs rows [i, i+L), targets rows [i+L, i+L+H);
  a split of n rows has n - L - H + 1 windows, every one used (nothing dropped).

`generate_series` is the embedded default: a multivariate hourly series with trend,
daily and weekly seasonality, noise and exogenous drivers that lead the target.
Bad input raises a one-line ValueError (missing column, NaNs, unparseable dates,
a series shorter than L + H, a horizon longer than a split).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import pandas as pd

FEATURES = ("M", "S", "MS")
SPLITS = ("train", "val", "test")
ETT_HOUR_ROWS = (12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24)  # 8640, 2880, 2880 rows (12/4/4 months)


def split_kind(name: str) -> str:
  """"ett_hour" for ETTh*, "ett_minute" for ETTm*, else "ratio" (70/10/20), from a file name."""
  base = os.path.basename(str(name))
  if base.startswith("ETTh"):
    return "ett_hour"
  if base.startswith("ETTm"):
    return "ett_minute"
  return "ratio"


def split_borders(num_rows: int, seq_len: int, kind: str = "ratio") -> list[tuple[int, int]]:
  """[(start, end)] row ranges of train / val / test (TSLib's border1s / border2s).

  ETT: [0, a), [a - L, a + b), [a + b - L, a + 2b) with a, b = 8640, 2880 rows (x4 for
  "ett_minute"); "ratio": n_train = int(0.7 N), n_test = int(0.2 N), val the rest.
  """
  if kind in ("ett_hour", "ett_minute"):
    k = 4 if kind == "ett_minute" else 1
    a, b, c = (r * k for r in ETT_HOUR_ROWS)
    if num_rows < a + b + c:
      raise ValueError(f"an ETT {'15-minute' if k == 4 else 'hourly'} file needs {a + b + c} rows, "
                       f"got {num_rows}")
    return [(0, a), (a - seq_len, a + b), (a + b - seq_len, a + b + c)]
  if kind != "ratio":
    raise ValueError(f"split kind must be ett_hour, ett_minute or ratio, got {kind!r}")
  n_train, n_test = int(num_rows * 0.7), int(num_rows * 0.2)
  n_val = num_rows - n_train - n_test
  return [(0, n_train), (max(n_train - seq_len, 0), n_train + n_val),
          (max(num_rows - n_test - seq_len, 0), num_rows)]


def num_windows(num_rows: int, seq_len: int, horizon: int) -> int:
  """Sliding windows of L inputs + H targets in `num_rows` rows: num_rows - L - H + 1 (>= 0)."""
  return max(num_rows - seq_len - horizon + 1, 0)


@dataclasses.dataclass(frozen=True)
class StandardScaler:
  """Per-column z-score: (x - mean) / std, std with ddof 0 (0 std -> 1)."""
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, rows: np.ndarray) -> "StandardScaler":
    """Fits mean / std per column on rows [N, C] (float64)."""
    rows = np.asarray(rows, np.float64)
    std = rows.std(axis=0)
    return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

  def transform(self, x: np.ndarray) -> np.ndarray:
    """(x - mean) / std for x [..., C]."""
    return (np.asarray(x, np.float64) - self.mean) / self.std

  def inverse(self, x: np.ndarray) -> np.ndarray:
    """x * std + mean for x [..., C]."""
    return np.asarray(x, np.float64) * self.std + self.mean


def infer_freq(dates: pd.DatetimeIndex) -> str:
  """"t" when the median step is under an hour (15-minute ETT), else "h"."""
  if len(dates) < 2:
    return "h"
  step = np.median(np.diff(dates.values).astype("timedelta64[s]").astype(np.int64))
  return "t" if step < 3600 else "h"


def time_features(dates: pd.DatetimeIndex, freq: str = "h") -> np.ndarray:
  """TSLib's `timeF` calendar features in [-0.5, 0.5]: float32 [N, 4] ("h") or [N, 5] ("t").

  "h": hour/23, weekday/6, (day-1)/30, (dayofyear-1)/365, each - 0.5; "t" prepends minute/59 - 0.5.
  """
  dates = pd.DatetimeIndex(dates)
  cols = [dates.hour / 23.0, dates.day_of_week / 6.0, (dates.day - 1) / 30.0,
          (dates.day_of_year - 1) / 365.0]
  if freq == "t":
    cols.insert(0, dates.minute / 59.0)
  elif freq != "h":
    raise ValueError(f"time feature freq must be 'h' or 't', got {freq!r}")
  return (np.stack([np.asarray(c, np.float64) for c in cols], axis=1) - 0.5).astype(np.float32)


def generate_series(num_rows: int = 4000, seed: int = 0, num_drivers: int = 3,
                    lead: int = 6) -> pd.DataFrame:
  """The embedded default: an hourly DataFrame with `date`, drivers x0..x{k-1} and `OT`.

  Each driver is a daily + weekly sinusoid with its own phase plus AR(1) noise; `OT`
  is a trend plus its own daily / weekly seasonality plus the drivers' values `lead`
  hours earlier (so the drivers lead the target) plus noise. Deterministic in `seed`.
  """
  rng = np.random.default_rng(seed)
  t = np.arange(num_rows + lead, dtype=np.float64)
  day, week = 2 * np.pi * t / 24.0, 2 * np.pi * t / 168.0
  drivers = []
  for k in range(num_drivers):
    noise = np.zeros_like(t)
    eps = rng.normal(0, 0.3, t.shape)
    for i in range(1, len(t)):
      noise[i] = 0.8 * noise[i - 1] + eps[i]
    phase = rng.uniform(0, 2 * np.pi, 2)
    drivers.append(np.sin(day + phase[0]) + 0.5 * np.sin(week + phase[1]) + noise)
  drivers = np.stack(drivers, axis=1)
  t = t[lead:]
  weights = rng.uniform(0.5, 1.5, num_drivers)
  target = (0.002 * t + 1.5 * np.sin(2 * np.pi * t / 24.0) + 0.8 * np.cos(2 * np.pi * t / 168.0)
            + drivers[:-lead] @ weights + rng.normal(0, 0.2, num_rows))
  frame = {"date": pd.date_range("2020-01-01", periods=num_rows, freq="h")}
  frame.update({f"x{k}": drivers[lead:, k] for k in range(num_drivers)})
  frame["OT"] = target
  return pd.DataFrame(frame)


def read_csv(path: str) -> pd.DataFrame:
  """Reads a forecasting CSV; FileNotFoundError (one line) if it is missing, a one-line
  ValueError naming the file if it is a directory, empty, not UTF-8 or not parseable CSV."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"forecast data file {path!r} does not exist")
  if not os.path.isfile(path):
    raise ValueError(f"forecast data file {path!r} is not a file")
  try:
    return pd.read_csv(path)
  except pd.errors.EmptyDataError:
    raise ValueError(f"forecast data file {path!r} is empty (no header row)") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"forecast data file {path!r} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
  except pd.errors.ParserError as e:
    raise ValueError(f"forecast data file {path!r} is not valid CSV ({str(e).splitlines()[0]})") from None


@dataclasses.dataclass
class ForecastData:
  """Scaled splits of one series and their windows.

  values: {split: float32 [rows, C_in]} (scaled inputs), marks: {split: float32 [rows, F]},
  targets: {split: float32 [rows, C_out]} (scaled target columns); columns: input names
  (target last); target_columns; scaler (fitted on the train rows of all input columns);
  borders: [(start, end)] of train / val / test in the file's rows.
  """
  values: dict[str, np.ndarray]
  marks: dict[str, np.ndarray]
  targets: dict[str, np.ndarray]
  dates: dict[str, np.ndarray]
  columns: list[str]
  target_columns: list[str]
  scaler: StandardScaler
  borders: list[tuple[int, int]]
  seq_len: int
  horizon: int

  def num_windows(self, split: str) -> int:
    """Number of windows of `split` (rows - L - H + 1)."""
    return num_windows(len(self.values[split]), self.seq_len, self.horizon)

  def window(self, split: str, index: int) -> dict[str, np.ndarray]:
    """Window `index` of `split`: {"series" [L, C_in], "marks" [L, F], "targets" [H, C_out]}."""
    s, e = index, index + self.seq_len
    return {"series": self.values[split][s:e], "marks": self.marks[split][s:e],
            "targets": self.targets[split][e:e + self.horizon]}

  def windows(self, split: str, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Stacked windows: {"series" [B, L, C_in], "marks" [B, L, F], "targets" [B, H, C_out]}."""
    idx = np.asarray(indices, np.int64)
    lo = idx[:, None]
    x = lo + np.arange(self.seq_len)[None]
    y = lo + self.seq_len + np.arange(self.horizon)[None]
    return {"series": self.values[split][x], "marks": self.marks[split][x],
            "targets": self.targets[split][y]}


def prepare(frame: pd.DataFrame, *, seq_len: int, horizon: int, features: str = "M",
            target: str = "OT", split: str = "ratio", date_column: str = "date",
            freq: str | None = None, name: str = "data") -> ForecastData:
  """Checks `frame`, orders its columns (target last), splits, scales and builds ForecastData.

  `split` is "ett_hour" | "ett_minute" | "ratio". One-line ValueErrors for a missing
  column, NaNs, unparseable dates, a series shorter than L + H or a horizon longer
  than a split.
  """
  if features not in FEATURES:
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
  if seq_len < 1 or horizon < 1:
    raise ValueError(f"seq_len and horizon must be >= 1, got {seq_len} and {horizon}")
  for col in (date_column, target):
    if col not in frame.columns:
      raise ValueError(f"{name}: missing column {col!r} (columns: {', '.join(map(str, frame.columns))})")
  try:
    dates = pd.DatetimeIndex(pd.to_datetime(frame[date_column], errors="raise"))
  except (ValueError, TypeError) as e:
    raise ValueError(f"{name}: column {date_column!r} does not parse as dates "
                     f"({str(e).splitlines()[0]})") from None
  others = [c for c in frame.columns if c not in (date_column, target)]
  columns = [target] if features == "S" else others + [target]
  try:
    raw = frame[columns].to_numpy(np.float64)
  except (ValueError, TypeError):
    bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    raise ValueError(f"{name}: non-numeric column(s) {bad}") from None
  if np.isnan(raw).any():
    rows, cols = np.nonzero(np.isnan(raw))
    raise ValueError(f"{name}: {len(rows)} NaN value(s), first in column {columns[cols[0]]!r} "
                     f"row {rows[0]}")
  if len(raw) < seq_len + horizon:
    raise ValueError(f"{name}: series of {len(raw)} rows is shorter than seq_len + horizon = "
                     f"{seq_len + horizon}")
  borders = split_borders(len(raw), seq_len, split)
  for s, (lo, hi) in zip(SPLITS, borders):
    if hi - lo < seq_len + horizon:
      raise ValueError(f"{name}: the {s} split has {hi - lo} rows, fewer than seq_len + horizon = "
                       f"{seq_len + horizon} (horizon {horizon} is too long for it)")
  scaler = StandardScaler.fit(raw[borders[0][0]:borders[0][1]])
  scaled = scaler.transform(raw).astype(np.float32)
  marks = time_features(dates, freq or infer_freq(dates))
  out_cols = [target] if features in ("S", "MS") else columns
  out_idx = [columns.index(c) for c in out_cols]
  values, tmarks, targets, tdates = {}, {}, {}, {}
  for s, (lo, hi) in zip(SPLITS, borders):
    values[s], tmarks[s] = scaled[lo:hi], marks[lo:hi]
    targets[s], tdates[s] = scaled[lo:hi][:, out_idx], dates.values[lo:hi]
  return ForecastData(values, tmarks, targets, tdates, columns, out_cols, scaler, borders,
                      seq_len, horizon)


def load(path: str | None, *, seq_len: int, horizon: int, features: str = "M", target: str = "OT",
         split: str = "auto", date_column: str = "date", freq: str | None = None,
         generated_rows: int = 4000, seed: int = 0) -> ForecastData:
  """ForecastData from the CSV at `path` (None or "" = `generate_series(generated_rows, seed)`).

  split "auto" picks "ett_hour" / "ett_minute" from an ETTh* / ETTm* file name, else "ratio".
  """
  if path:
    frame, name = read_csv(path), os.path.basename(path)
  else:
    frame, name = generate_series(generated_rows, seed), "generated series"
  if split == "auto":
    split = split_kind(path) if path else "ratio"
  return prepare(frame, seq_len=seq_len, horizon=horizon, features=features, target=target,
                 split=split, date_column=date_column, freq=freq, name=name)
