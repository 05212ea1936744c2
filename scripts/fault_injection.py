"""Fault injection for the trainer: SIGKILLs at random moments, bad checkpoints, a full disk, NaNs.

  python scripts/fault_injection.py                     # 20 kills + the other faults
  python scripts/fault_injection.py --kills 20 --seed 0 --workdir /tmp/attnlab-faults \\
      --out experiments/faults

Every case trains the stand-in task/model of tests/train (`python -m tests.train.runner`,
CPU, one subprocess per attempt, the shared compilation cache) with `TRAIN`, and is
compared with one uninterrupted reference run: the metrics.jsonl records without their
wall-clock field, and the whole final train state (params, optimizer state, step, model
state) read back with orbax's own StandardCheckpointer, bit for bit.

Cases (the `fault` column):
  kill/<phase>   SIGKILL armed at PHASE of a random step, after a random delay
                 (ATTNLAB_TEST_KILL_AT, attnlab/train/fault_hooks.py), restarted with the
                 same command and environment until it finishes. For kill/checkpoint the
                 row records whether orbax's temporary directory was left behind by the
                 kill (the write was in flight) and that the restart removed it.
  corrupt/*      the finished reference's latest checkpoint damaged (a flipped bit that
                 orbax restores silently, a truncated array file, a missing item), rerun.
  full_disk      a checkpoint write fails with ENOSPC: a real small tmpfs when run as root,
                 else an injected OSError; then space is freed and the run is resumed.
  nan/*          NaN injected into the loss or one parameter's gradient at a checkpoint
                 step (ATTNLAB_TEST_INJECT_NAN): the run must stop naming the step and the
                 tensor, and every saved checkpoint must be finite.

Resumable: each finished case is a row of OUT/results.csv, skipped on a rerun. OUT/README.md
gets the table fault / runs / survived / identical and the command that made it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from tests.train import subproc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkpoint_damage import CORRUPTIONS, flat_leaves  # noqa: E402  (the corrupt/* cases' damages)

# 16 steps; a checkpoint and an eval every 4 steps (two kept), a log line every 2.
TRAIN = dict(steps=16, checkpoint_every=4, log_every=2, eval_every=4, keep_checkpoints=2)
WALL_CLOCK_KEYS = ("train/steps_per_sec",)
KILL_PHASES = ("step", "checkpoint", "eval", "between")
TMP_MARK = ".orbax-checkpoint-tmp"


def log(message: str) -> None:
  print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- running

def run_spec(workdir: str, train: dict | None = None, **extra) -> dict:
  """The tests.train.runner run spec for `workdir` (TRAIN unless `train`)."""
  return dict(workdir=workdir, train=dict(train or TRAIN), **extra)


def attempt(spec: dict, env: dict | None = None, timeout: float = 300) -> tuple[int, str]:
  """Runs the runner once on `spec`; returns (returncode, stderr)."""
  rc, _, err = subproc.finish(subproc.start([spec], extra_env=env), timeout=timeout)
  return rc, err


def partial_dirs(workdir: str) -> list[str]:
  """Orbax temporary directories (unfinished saves) under WORKDIR/checkpoints."""
  return sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", f"*{TMP_MARK}*")))


def run_until_done(spec: dict, env: dict | None = None, max_attempts: int = 5) -> dict:
  """Runs `spec` with `env` again and again (the same command) until it exits 0.

  Returns {"attempts", "kills", "rc" (the last), "partial_after_kill" (orbax temporary
  dirs found right after each kill), "partial_at_end", "stderr" (the last attempt's)}.
  """
  out = {"attempts": 0, "kills": 0, "partial_after_kill": [], "rc": None, "stderr": ""}
  while out["attempts"] < max_attempts:
    rc, err = attempt(spec, env)
    out["attempts"] += 1
    out["rc"], out["stderr"] = rc, err
    if rc == -signal.SIGKILL:
      out["kills"] += 1
      out["partial_after_kill"] += partial_dirs(spec["workdir"])
      continue
    break
  out["partial_at_end"] = partial_dirs(spec["workdir"])
  return out


# ----------------------------------------------------------------------------- comparing

def comparable(records: list[dict]) -> list[dict]:
  """metrics.jsonl records without their wall-clock fields."""
  return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in records]


def read_records(workdir: str) -> list[dict]:
  """WORKDIR/metrics.jsonl as a list of dicts (read here, not with the trainer's helpers)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def step_dirs(workdir: str) -> list[int]:
  """Steps of the finished checkpoints in WORKDIR/checkpoints, ascending."""
  root = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []


def saved_state(workdir: str, step: int | None = None) -> dict[str, np.ndarray]:
  """{leaf path: array} of checkpoint `step` (default: the newest), read with orbax's
  StandardCheckpointer (no attnlab code), so a wrong restore in attnlab cannot hide here."""
  import orbax.checkpoint as ocp
  step = step_dirs(workdir)[-1] if step is None else step
  return flat_leaves(ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state")))


def differences(ref_dir: str, workdir: str) -> str:
  """"" if `workdir` ended exactly like `ref_dir` (records and final state, bitwise), else why not."""
  a, b = comparable(read_records(ref_dir)), comparable(read_records(workdir))
  if a != b:
    steps_a, steps_b = [r["step"] for r in a], [r["step"] for r in b]
    if steps_a != steps_b:
      return f"metrics steps differ: {steps_b} vs reference {steps_a}"
    first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"metrics record {first} (step {a[first]['step']}) differs"
  if not step_dirs(workdir) or step_dirs(workdir)[-1] != step_dirs(ref_dir)[-1]:
    return f"final checkpoint steps {step_dirs(workdir)} vs reference {step_dirs(ref_dir)}"
  sa, sb = saved_state(ref_dir), saved_state(workdir)
  if sorted(sa) != sorted(sb):
    return "final state has different leaves"
  for k in sa:
    if sa[k].dtype != sb[k].dtype or sa[k].shape != sb[k].shape or sa[k].tobytes() != sb[k].tobytes():
      return f"final state {k} differs"
  return ""


def nonfinite_saved(workdir: str) -> list[str]:
  """["step N: leaf", ...] for every non-finite float leaf of every saved checkpoint."""
  bad = []
  for step in step_dirs(workdir):
    for k, v in saved_state(workdir, step).items():
      if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
        bad.append(f"step {step}: {k}")
  return bad


# ----------------------------------------------------------------------------- faults

def kill_plan(n: int, seed: int, train: dict | None = None) -> list[dict]:
  """`n` kills {phase, step, delay}: phases in turn (KILL_PHASES), random steps and delays.

  step/between: any step but the last; eval/checkpoint: a step where that happens (not the
  last for checkpoint, so there is something left to do). delay: uniform in [0, 20 ms] from
  the moment the phase starts (the kill lands in it, or a little after).
  """
  tc = dict(train or TRAIN)
  rng = random.Random(seed)
  total, every = int(tc["steps"]), int(tc["checkpoint_every"])
  choices = {"step": list(range(1, total)), "between": list(range(1, total)),
             "eval": list(range(int(tc["eval_every"]), total + 1, int(tc["eval_every"]))),
             "checkpoint": list(range(every, total, every))}
  plan = []
  for i in range(n):
    phase = KILL_PHASES[i % len(KILL_PHASES)]
    plan.append({"phase": phase, "step": rng.choice(choices[phase]),
                 "delay": round(rng.uniform(0.0, 0.02), 4)})
  return plan


def kill_case(ref_dir: str, workdir: str, kill: dict) -> dict:
  """One run SIGKILLed as `kill` says, restarted until done, compared with `ref_dir`."""
  from attnlab.train.fault_hooks import KILL_AT_ENV
  shutil.rmtree(workdir, ignore_errors=True)
  env = {KILL_AT_ENV: f"{kill['phase']}:{kill['step']}:{kill['delay']}"}
  out = run_until_done(run_spec(workdir), env)
  diff = differences(ref_dir, workdir) if out["rc"] == 0 else f"rc {out['rc']}: {out['stderr'][-300:]}"
  note = f"killed {out['kills']}x"
  if kill["phase"] == "checkpoint":
    note += (f"; orbax tmp dir left by the kill: {out['partial_after_kill'] or 'none (write had finished)'}"
             f"; after restart: {out['partial_at_end'] or 'removed'}")
  resumed = [line.split("resumed from step ")[1].split()[0] for line in out["stderr"].splitlines()
             if "resumed from step " in line]
  note += f"; resumed from step {resumed[-1]}" if resumed else "; restarted from scratch"
  return {"fault": f"kill/{kill['phase']}", "detail": f"step {kill['step']} +{kill['delay']}s",
          "attempts": out["attempts"], "survived": out["rc"] == 0 and out["kills"] == 1 and not out["partial_at_end"],
          "identical": not diff, "note": diff or note}


def corrupt_case(ref_dir: str, workdir: str, how: str) -> dict:
  """The finished reference's latest checkpoint damaged by CORRUPTIONS[how], then rerun."""
  shutil.rmtree(workdir, ignore_errors=True)
  shutil.copytree(ref_dir, workdir)
  latest = step_dirs(workdir)[-1]
  path = CORRUPTIONS[how](os.path.join(workdir, "checkpoints", str(latest)))
  out = run_until_done(run_spec(workdir))
  warned = f"checkpoint step {latest}" in out["stderr"] and "could not be restored" in out["stderr"]
  diff = differences(ref_dir, workdir) if out["rc"] == 0 else f"rc {out['rc']}: {out['stderr'][-300:]}"
  return {"fault": f"corrupt/{how}", "detail": f"step {latest}: {os.path.relpath(path, workdir)}",
          "attempts": out["attempts"], "survived": out["rc"] == 0 and warned, "identical": not diff,
          "note": diff or f"warned naming step {latest}: {warned}; resumed from the previous checkpoint"}


def _mount_tmpfs(path: str, size: str) -> bool:
  """Mounts (or remounts) a tmpfs of `size` at `path`; False if that is not allowed."""
  os.makedirs(path, exist_ok=True)
  opts = f"size={size}" if not os.path.ismount(path) else f"remount,size={size}"
  return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                        capture_output=True).returncode == 0


def full_disk_case(ref_dir: str, workdir: str) -> dict:
  """A checkpoint write hits ENOSPC: a clear error naming the step, the earlier checkpoint
  intact; after freeing space a rerun resumes from it and ends like the reference.

  As root: the workdir on a 300 KiB tmpfs (a real full disk: one stand-in checkpoint takes
  176 KiB in 4 KiB pages, so the first fits and the second does not); else the runner's
  injected ENOSPC at step 8.
  """
  shutil.rmtree(workdir, ignore_errors=True)
  real = os.geteuid() == 0 and _mount_tmpfs(workdir, "300k")
  spec = run_spec(workdir) if real else run_spec(workdir, enospc_at=8)
  try:
    rc, err = attempt(spec)
    lines = [line for line in err.splitlines() if "could not write checkpoint step" in line]
    clear = rc not in (0, -signal.SIGKILL) and bool(lines)
    failed_step = int(lines[-1].split("could not write checkpoint step ")[1].split()[0]) if lines else None
    intact = [s for s in step_dirs(workdir) if failed_step is None or s < failed_step]
    restorable = bool(intact) and not nonfinite_saved(workdir) and bool(saved_state(workdir, intact[-1]))
    if real:
      _mount_tmpfs(workdir, "64m")  # free space
    out = run_until_done(run_spec(workdir))
    resumed = f"resumed from step {intact[-1]}" in out["stderr"] if intact else False
    diff = differences(ref_dir, workdir) if out["rc"] == 0 else f"rc {out['rc']}: {out['stderr'][-300:]}"
  finally:
    if real:
      subprocess.run(["umount", workdir], capture_output=True)
  message = lines[-1].strip() if lines else err[-300:]
  return {"fault": "full_disk", "detail": "tmpfs 300k (real ENOSPC)" if real else "injected ENOSPC at step 8",
          "attempts": 1 + out["attempts"], "survived": clear and restorable and resumed and out["rc"] == 0,
          "identical": not diff,
          "note": diff or f"error: {message[-400:]}; intact: steps {intact}; resumed from it: {resumed}"}


def nan_case(workdir: str, target: str, step: int = 8) -> dict:
  """NaN injected into `target` ("loss" or "grad:PATH") at `step`: the run must fail naming
  the step and the tensor, and every checkpoint it saved must be finite."""
  from attnlab.train.fault_hooks import INJECT_NAN_ENV
  shutil.rmtree(workdir, ignore_errors=True)
  rc, err = attempt(run_spec(workdir), {INJECT_NAN_ENV: f"{target}@{step}"})
  what = "loss" if target == "loss" else f"grad of params{target[len('grad:'):]}"
  want = f"FloatingPointError: non-finite {what} at step {step} "
  named = want in err
  bad = nonfinite_saved(workdir)
  after = [s for s in step_dirs(workdir) if s >= step]
  line = next((x for x in err.splitlines() if x.startswith("FloatingPointError")), err[-300:])
  return {"fault": f"nan/{'loss' if target == 'loss' else 'grad'}", "detail": f"{target} at step {step}",
          "attempts": 1, "survived": rc not in (0, -signal.SIGKILL) and named and not bad and not after,
          "identical": "", "note": f"{line.strip()}; saved steps {step_dirs(workdir)}, non-finite: {bad or 'none'}"}


# ----------------------------------------------------------------------------- report

def table(rows: list[dict]) -> str:
  """Markdown table fault / runs / survived / identical (counts per fault) from result rows."""
  import pandas as pd
  df = pd.DataFrame(rows)
  lines = ["| fault | runs | survived | identical |", "| --- | --- | --- | --- |"]
  for fault, g in df.groupby("fault", sort=False):
    ident = g["identical"].astype(str)
    same = "n/a" if (ident == "").all() else str(int((ident == "True").sum()))
    lines.append(f"| {fault} | {len(g)} | {int(g['survived'].astype(str).eq('True').sum())} | {same} |")
  return "\n".join(lines)


def in_flight(rows: list[dict]) -> str:
  """One sentence: how many kill/checkpoint kills left orbax's temporary directory (the write
  was in flight) and whether every restart removed it."""
  ck = [r for r in rows if r["fault"] == "kill/checkpoint"]
  hit = [r for r in ck if "tmp dir left by the kill: [" in str(r["note"])]
  cleaned = all("after restart: removed" in str(r["note"]) for r in ck)
  return (f"{len(hit)} of {len(ck)} kill/checkpoint kills landed while orbax's background write was in "
          f"flight (its `<step>.orbax-checkpoint-tmp` directory was there after the kill); "
          f"{'every' if cleaned else 'NOT every'} restart ignored and removed it.")


def write_report(out_dir: str, rows: list[dict], command: str, seconds: float) -> None:
  """Writes OUT/results.csv (one row a case) and OUT/README.md (the table and the command)."""
  import pandas as pd
  os.makedirs(out_dir, exist_ok=True)
  pd.DataFrame(rows).to_csv(os.path.join(out_dir, "results.csv"), index=False)
  text = f"""# Fault injection: the trainer survives kills, bad checkpoints, a full disk and NaNs

Made by `{command}` ({seconds:.0f} s of the last invocation, stand-in task of tests/train,
{TRAIN['steps']} steps, checkpoint and eval every {TRAIN['checkpoint_every']}, CPU).
Each run is compared with one uninterrupted reference run: metrics.jsonl without
`train/steps_per_sec`, and the final checkpoint's whole train state read with orbax's
StandardCheckpointer, bit for bit. `survived`: the run finished after restarts with the
same command (kills: exactly one kill, no orbax temporary directory left at the end;
corruption: a warning naming the bad step; full disk: a one-line error naming the step and
directory, the earlier checkpoint intact and resumed from; NaN: stopped naming the step and
the first non-finite tensor, nothing non-finite or at/after the bad step saved). See
results.csv for each case (the kill moment, whether orbax's temporary dir was left, the
step resumed from) and scripts/fault_injection.py for the definitions.

Reading the `note` column: a kill a few steps after a checkpoint step often resumes from
the checkpoint before it. Orbax finalises an asynchronous save (renames its temporary
directory) 60-100 ms after `save` returns on an idle 2-core machine (more under load),
while a stand-in step takes about 15 ms; until then that step is not a checkpoint, and
the restart correctly ignores (and deletes) the unfinished one. Nothing is lost beyond
those steps, which are retrained to the same bits.

{table(rows)}

{in_flight(rows)}
"""
  with open(os.path.join(out_dir, "README.md"), "w") as f:
    f.write(text)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kills", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", default="/tmp/attnlab-faults")
  p.add_argument("--out", default=os.path.join(REPO, "experiments", "faults"))
  args = p.parse_args(argv)
  command = "python scripts/fault_injection.py " + " ".join(argv if argv is not None else sys.argv[1:])
  t0 = time.perf_counter()
  csv = os.path.join(args.out, "results.csv")
  import pandas as pd
  rows = pd.read_csv(csv, keep_default_na=False).to_dict("records") if os.path.exists(csv) else []
  done = {r["case"] for r in rows}
  ref = os.path.join(args.workdir, "reference")
  if not step_dirs(ref) or not read_records(ref) or read_records(ref)[-1]["step"] != TRAIN["steps"]:
    shutil.rmtree(ref, ignore_errors=True)
    log("reference run")
    rc, err = attempt(run_spec(ref))
    if rc != 0:
      raise SystemExit(f"reference run failed: {err[-2000:]}")
  cases = [(f"kill{i:02d}", lambda k=k, i=i: kill_case(ref, os.path.join(args.workdir, f"kill{i:02d}"), k))
           for i, k in enumerate(kill_plan(args.kills, args.seed))]
  cases += [(f"corrupt_{how}", lambda how=how: corrupt_case(ref, os.path.join(args.workdir, how), how))
            for how in CORRUPTIONS]
  cases += [("full_disk", lambda: full_disk_case(ref, os.path.join(args.workdir, "full_disk")))]
  cases += [("nan_loss", lambda: nan_case(os.path.join(args.workdir, "nan_loss"), "loss")),
            ("nan_grad", lambda: nan_case(os.path.join(args.workdir, "nan_grad"), "grad:['q']"))]
  for n, (case, fn) in enumerate(cases, 1):
    if case in done:
      continue
    t = time.perf_counter()
    row = {"case": case, **fn(), "seconds": round(time.perf_counter() - t, 1)}
    rows.append(row)
    log(f"[{n}/{len(cases)}] {case} {row['fault']} {row['detail']}: survived={row['survived']} "
        f"identical={row['identical']} ({row['note'][:160]})")
    write_report(args.out, rows, command, time.perf_counter() - t0)
  write_report(args.out, rows, command, time.perf_counter() - t0)
  print(table(rows))
  bad = [r["case"] for r in rows if str(r["survived"]) != "True" or str(r["identical"]) == "False"]
  if bad:
    log(f"FAILED: {bad}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
