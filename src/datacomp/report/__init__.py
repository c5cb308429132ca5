"""Reading experiments back: leaderboard (with the paper's Table 3), HTML report, submission package."""

from datacomp.report.experiments import AGGREGATES, Experiment, Run, load_experiment, load_experiments
from datacomp.report.html import build_report
from datacomp.report.leaderboard import leaderboard_rows, leaderboard_table, paper_rows
from datacomp.report.submit import SubmissionInfo, package_submission, upload_submission, verify_submission

__all__ = [
    "AGGREGATES", "Experiment", "Run", "SubmissionInfo", "build_report", "leaderboard_rows",
    "leaderboard_table", "load_experiment", "load_experiments", "package_submission", "paper_rows",
    "upload_submission", "verify_submission",
]
