"""``metabelief run family``: any family, its references chosen by capability, from a name or a
class path, with figures checked against independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest

import metabelief
from metabelief import cli
from metabelief.experiments import family as family_experiment
from metabelief.tasks.markov_bandit import KUO_VARIANTS

BASIC = {"random", "belief_greedy"}


@pytest.mark.parametrize(
    ("name", "args", "expected", "missing"),
    [
        ("oracle_bandit", {"num_arms": 4, "horizon": 3}, BASIC | {"bayes_optimal", "oracle_first"}, set()),
        ("tiger", {"horizon": 5}, {"random", "belief_greedy", "bayes_optimal"}, set()),
        ("tiger", {"horizon": 30, "p_stay": 0.9}, {"random", "belief_greedy"}, {"bayes_optimal"}),
        ("latent_goal_cart", {}, {"random", "belief_greedy", "map_greedy"}, {"bayes_optimal"}),
        ("markov_bandit", KUO_VARIANTS["asymmetric_reward"], {"random", "belief_greedy"}, {"bayes_optimal"}),
        ("bernoulli_bandit", {"horizon": 10}, BASIC | {"thompson", "bayes_optimal"}, set()),
        ("gridworld", {}, {"random"}, {"belief_greedy", "bayes_optimal"}),
    ],
    ids=["oracle", "tiger", "markov-tiger", "cart", "markov-bandit", "bernoulli", "gridworld"],
)  # fmt: skip
def test_references_follow_the_capabilities(name, args, expected, missing):
    found = family_experiment.references(metabelief.make(name, **args))
    assert set(found.policies) == expected
    assert set(found.unavailable) == missing
    assert (found.bayes_optimal_value is None) == ("bayes_optimal" not in expected)


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        (("random", "belief_greedy", "map_greedy", "bayes_optimal"), "bayes_optimal"),  # even if lower
        (("random", "belief_greedy", "map_greedy"), "map_greedy"),  # the best held-out return
        (("random",), "random"),
    ],
)
def test_the_reference_is_bayes_optimal_else_the_best_other_policy(policies, expected):
    returns = {"random": 9.0, "belief_greedy": 2.0, "map_greedy": 3.0, "bayes_optimal": 1.0}
    found = family_experiment.References(dict.fromkeys(policies), None, {})
    assert family_experiment.reference_policy(found, returns.get) == expected


def test_the_markov_tiger_says_why_it_has_no_dp():
    found = family_experiment.references(metabelief.make("tiger", horizon=30, p_stay=0.9))
    assert "keep splitting" in found.unavailable["bayes_optimal"]


def test_config_of_a_name_a_class_path_and_an_instance():
    by_name = family_experiment.FamilyConfig.of("tiger", p_stay=0.9)
    assert by_name.train.family == "tiger" and dict(by_name.train.family_args) == {"p_stay": 0.9}
    by_path = family_experiment.FamilyConfig.of("metabelief.tasks.tiger:Tiger", p_stay=0.9)
    assert by_path.train.make_family() == by_name.train.make_family() == metabelief.make("tiger", p_stay=0.9)
    instance = metabelief.make("oracle_bandit", horizon=4)
    assert family_experiment.FamilyConfig.of(instance).train.make_family() is instance
    own = family_experiment.FamilyConfig.of("tests.scratch_family:ScratchBetaBandit").train.make_family()
    assert type(own).__name__ == "ScratchBetaBandit"  # a user's own class, by its import path
    assert set(family_experiment.references(own).policies) == BASIC | {"thompson", "bayes_optimal"}
    assert family_experiment.FamilyConfig.of("markov_bandit").train.num_tasks == 256  # its preset
    assert family_experiment.FamilyConfig.of("tiger").train.num_tasks == 1024


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "family"], "run family needs a family"),
        (["run", "bandit", "tiger"], "bandit takes no family"),
        (["run", "family", "no_such_module_here:Thing"], "names no importable class"),
        (["run", "family", "metabelief.tasks.tiger:Tiger", "colour=3"], "does not take these arguments"),
        (["run", "family", "tiger", "accuracy=0.4"], "accuracy must lie in (0.5, 1]"),
        (["run", "family", "--quick", "tiger", "accuracy=0.4"], "accuracy must lie in (0.5, 1]"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "family", "no_such_family"], "unknown family name"),
    ],
)
def test_bad_family_input_exits_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_family_quick_from_a_class_path(tmp_path, capsys):
    out_dir = tmp_path / "run"
    argv = ["run", "family", "metabelief.tasks.oracle_bandit:OracleBandit", "num_arms=4", "horizon=4"]
    assert cli.main([*argv, "--quick", "--out", str(out_dir), "--no-progress"]) == 0
    results = json.loads((out_dir / "results.json").read_text())
    # With 3 candidates and 4 pulls, trying candidates beats asking the oracle (hand-solved: a pull
    # finds the target w.p. 1/3, then 15 more; else 1, and two candidates with 3 pulls are worth
    # 1/2 (5 + 10) + 1/2 (1 + 10) = 13): V = 1/3 * 20 + 2/3 * 14 = 16.
    assert results["bayes_optimal_value"] == pytest.approx(16.0, abs=1e-6)
    assert results["reference"] == "bayes_optimal" and results["unavailable"] == {}
    assert set(results["seeds"][0]["return"]) == {
        "agent",
        "random",
        "belief_greedy",
        "bayes_optimal",
        "oracle_first",
    }
    for entry in results["seeds"]:
        returns = entry["return"]
        fraction = (returns["agent"] - returns["random"]) / (returns["bayes_optimal"] - returns["random"])
        assert entry["return_fraction_random_to_reference"] == pytest.approx(fraction, rel=1e-6)
        se = entry["return_se"]["bayes_optimal"]
        assert abs(returns["bayes_optimal"] - 16.0) <= 4 * se + 1e-6
        # Asking the oracle first: 0.1 (1 + 2 + 3) / 3 + 3 * 5 on average.
        assert returns["oracle_first"] == pytest.approx(
            15.2, abs=4 * entry["return_se"]["oracle_first"] + 0.05
        )
    assert np.isclose(
        results["summary"]["return_fraction_random_to_reference"]["mean"],
        np.mean([entry["return_fraction_random_to_reference"] for entry in results["seeds"]]),
    )
    out = capsys.readouterr().out
    assert "% of the way from random to bayes_optimal" in out and "exact DP): 16.000" in out
    assert (out_dir / "decoded_belief.png").exists() and (out_dir / "agent" / "config.json").exists()
