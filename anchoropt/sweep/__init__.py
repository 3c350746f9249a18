"""Sweeps of the protocol scripts: the plan (jobs and dependencies), the local and Slurm launchers, the summary.

``anchoropt-sweep`` (anchoropt/cli/sweep.py) is the command; every job is one protocol-script call, so the
scripts stay the one place where ``train.py`` command lines are composed.
"""
