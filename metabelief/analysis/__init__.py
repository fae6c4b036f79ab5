"""Analyses of behaviour: the two-step task's stay probabilities (Daw et al. 2011)."""

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
