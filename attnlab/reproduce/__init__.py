"""Paper tables from experiment files: `attnlab reproduce NAME` (experiments/NAME.py).

experiment.py loads and validates the file and plans its runs; runner.py trains them
(resumable); report.py puts our numbers beside the published ones and checks the claims.
"""

from attnlab.reproduce.experiment import Run, load_experiment, plan_runs
from attnlab.reproduce.report import check_claims, write_report
from attnlab.reproduce.runner import run_experiment

__all__ = ["Run", "check_claims", "load_experiment", "plan_runs", "run_experiment", "write_report"]
