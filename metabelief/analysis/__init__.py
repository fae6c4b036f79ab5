"""Analyses of behaviour and state: the two-step task's stay probabilities (Daw et al. 2011), here;
the state-machine simulation (Mikulik et al. 2020) in ``metabelief.analysis.state_machine``; the
belief intervention (a causal test of the decoded belief) in ``metabelief.analysis.intervention``."""

from metabelief.analysis.stay import (
    COMMON,
    RARE,
    REWARDED,
    UNREWARDED,
    StayProbabilities,
    StaySummary,
    stay_probabilities,
    summarize_runs,
)

__all__ = [
    "COMMON",
    "RARE",
    "REWARDED",
    "UNREWARDED",
    "StayProbabilities",
    "StaySummary",
    "stay_probabilities",
    "summarize_runs",
]
