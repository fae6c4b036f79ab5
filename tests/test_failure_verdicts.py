"""The failure experiment's verdict rule, exclusion rule and paired differences, on hand-worked cases."""

import numpy as np
import pytest

from metabelief.experiments import seeds
from metabelief.experiments.failure import evidence_blind_return
from metabelief.experiments.failure_measures import HYPOTHESES, MEASURES
from metabelief.experiments.failure_verdicts import (
    SEPARATION,
    UNDECIDED,
    Estimate,
    decide,
    learning,
    paired_difference,
    verdicts,
)
from metabelief.tasks import dependent_bandit

C, TR, TE = "counts", "training posterior", "test posterior"
Z = 1.959963984540054


def test_identical_controls_leave_the_verdict_undecided_whatever_the_agent():
    # The refit R² case the old rule settled by dictionary order: counts 1.00, test 1.00.
    controls = {C: Estimate(1.0), TR: Estimate(0.12), TE: Estimate(1.0)}
    assert decide(Estimate(0.97), controls) == UNDECIDED
    assert decide(Estimate(1.0), controls) == UNDECIDED
    # The tie does not touch TR, which the measure separates from both: an agent at TR is named.
    assert decide(Estimate(0.12), controls) == TR


def test_clearly_separated_controls_name_the_side_the_agent_is_on():
    controls = {C: Estimate(0.0), TR: Estimate(1.0), TE: Estimate(0.5)}
    assert decide(Estimate(0.9, 0.02), controls) == TR
    assert decide(Estimate(0.05, 0.02), controls) == C
    assert decide(Estimate(0.5, 0.02), controls) == TE
    assert decide(Estimate(0.75, 0.0), {C: Estimate(0.0), TR: Estimate(1.0)}) == TR


def test_overlapping_intervals_leave_the_verdict_undecided():
    two = {C: Estimate(0.0), TR: Estimate(1.0)}
    # The agent's interval reaches the midpoint 0.5: from 0.6 - 1.96 * 0.06 = 0.48.
    assert decide(Estimate(0.6, 0.06), two) == UNDECIDED
    assert decide(Estimate(0.6, 0.05), two) == TR  # down to 0.502
    # The controls' difference 0.5 has the interval 0.5 -+ 1.96 * 0.3, which holds 0: not separated,
    # however far on one side the agent; with se 0.15 they are, and the agent is named.
    assert decide(Estimate(-0.5), {C: Estimate(0.0, 0.3), TR: Estimate(0.5)}) == UNDECIDED
    assert decide(Estimate(-0.5), {C: Estimate(0.0, 0.15), TR: Estimate(0.5)}) == C
    # Controls closer than SEPARATION: not separated, even when exact.
    near = {C: Estimate(0.0), TR: Estimate(SEPARATION - 1e-3)}
    assert decide(Estimate(0.0), near) == UNDECIDED
    assert decide(Estimate(0.0), {C: Estimate(0.0), TR: Estimate(SEPARATION)}) == C
    assert decide(Estimate(0.0), {C: Estimate(0.0)}) == UNDECIDED  # one control: nothing to decide


def test_the_side_uses_every_standard_error():
    controls = {C: Estimate(0.0, 0.04), TR: Estimate(1.0, 0.04)}
    # midpoint 0.5 with se 0.5 * sqrt(0.04² + 0.04²); the agent's se 0.03.
    se = np.sqrt(0.03**2 + 0.25 * 2 * 0.04**2)
    assert decide(Estimate(0.5 + Z * se + 1e-4, 0.03), controls) == TR
    assert decide(Estimate(0.5 + Z * se - 1e-4, 0.03), controls) == UNDECIDED


def test_the_exclusion_rule_excludes_exactly_the_seeds_below_the_threshold():
    family = dependent_bandit(horizon=100, support=(0.1, 0.55))
    blind = evidence_blind_return(family)
    assert blind == pytest.approx(67.5)  # always arm 1: 1 - E[p] = 0.675 a pull
    optimal = 72.0
    returns = [68.1, 69.74, 69.75, 69.76, 71.5, 50.0]  # the threshold 0.5 sits at 69.75
    got = [learning(r, blind, optimal, 0.5) for r in returns]
    assert [entry.included for entry in got] == [False, False, True, True, True, False]
    np.testing.assert_allclose([entry.fraction for entry in got], (np.array(returns) - 67.5) / 4.5)
    with pytest.raises(ValueError, match="optimal_return"):
        learning(70.0, 70.0, 70.0, 0.5)


def test_paired_difference_is_over_the_included_seeds_only():
    got = paired_difference("x", "c", [0.5, 0.4, 0.9, None], [0.6, 0.6, 0.1, 0.2], [True, True, False, True])
    assert got.per_seed == pytest.approx((-0.1, -0.2, None, None))
    assert got.interval == pytest.approx(seeds.interval([-0.1, -0.2]))
    assert got.to_dict()["per_seed"][2:] == [None, None]


def _state(probability, se=None):
    """One state's entry as ``results.json`` writes it, with one measure's figure filled in."""
    return {
        "follows_posterior_not_majority": {"probability": probability, "se": se},
        "follows_training_prior": {"probability": None, "se": None},
        "readout": {"closer_to_training": None, "closer_to_training_se": None},
        "r2_posterior_mean": {"test prior": {"mlp": None}},
    }


def _seed(agent, counts, training, test, log_odds, agent_se=0.01):
    states = {"agent": _state(agent, agent_se), "untrained": _state(0.5)}
    states |= {
        C: _state(counts),
        TR: _state(training),
        TE: _state(test),
        "training log-odds": _state(log_odds),
    }
    return {"cond": {"states": states}}


def test_verdicts_count_the_learning_seeds_verdicts_and_leave_out_the_excluded():
    per_seed = [
        _seed(agent=0.95, counts=0.0, training=1.0, test=0.0, log_odds=1.0),  # TR ties log-odds
        _seed(agent=0.95, counts=0.0, training=1.0, test=0.0, log_odds=0.6),  # TR: decided
        _seed(agent=0.05, counts=0.0, training=1.0, test=0.0, log_odds=0.6),  # C ties TE
        _seed(agent=0.80, counts=0.0, training=1.0, test=0.0, log_odds=0.6, agent_se=0.2),  # wide
        _seed(agent=0.95, counts=0.0, training=1.0, test=0.0, log_odds=0.6),  # excluded
        _seed(agent=None, counts=0.0, training=1.0, test=0.0, log_odds=0.6),  # no agent figure
    ]
    included = [True, True, True, True, False, True]

    (row,) = verdicts(per_seed, included, MEASURES, HYPOTHESES)

    assert (row.measure, row.condition) == ("follows_posterior_not_majority", "cond")
    assert row.per_seed == (UNDECIDED, TR, UNDECIDED, UNDECIDED, None, None)
    assert row.counts == {C: 0, TR: 1, TE: 0, "training log-odds": 0, UNDECIDED: 3}
    assert row.excluded == 1
    log_odds = "training log-odds"
    assert row.separates == ((C, TR), (C, log_odds), (TR, TE), (TR, log_odds), (TE, log_odds))
    assert row.agent == seeds.interval([0.95, 0.95, 0.05, 0.80])
    assert row.controls == pytest.approx(
        {C: 0.0, TR: 1.0, TE: 0.0, "training log-odds": 0.68}
    )  # 5 learning seeds
    assert row.untrained == 0.5


def test_no_verdict_where_no_learning_seed_separates_a_pair():
    per_seed = [
        _seed(agent=0.9, counts=0.5, training=0.55, test=0.6, log_odds=0.5),
        _seed(agent=0.9, counts=0.0, training=1.0, test=0.0, log_odds=1.0),  # separates, excluded
    ]
    assert verdicts(per_seed, [True, False], MEASURES, HYPOTHESES) == []
