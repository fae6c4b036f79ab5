"""A family of one's own, first class: written from scratch in ``tests/scratch_family.py`` (never
registered), trained with ``TrainConfig(family=instance)``, saved and reloaded with
``load_agent(path, family=instance)``, and run through the whole bandit experiment (Thompson, the
exact DP, Gittins, the state-machine simulation, probes, controls, intervention). It samples and
steps as the built-in ``bernoulli_bandit`` does, so under the same keys every figure equals the
built-in's. The agent is the built-in GRU: the built-in family's run is then the very run
``test_own_agent_end_to_end`` compares its own GRU with, run once for both (``shared_runs``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import metabelief
from metabelief import baselines, train
from metabelief.experiments import bandit
from metabelief.rollout import rollout, sample_tasks
from tests import shared_runs
from tests.scratch_family import ScratchBetaBandit

SCRATCH = ScratchBetaBandit(num_arms=2, horizon=10, prior_a=1.0, prior_b=1.0)
BUILT_IN = metabelief.make("bernoulli_bandit", num_arms=2, horizon=10)
CONFIGS = {
    "scratch": shared_runs.tiny_bandit(family=SCRATCH, family_args=(), cell="gru"),
    "built_in": shared_runs.tiny_bandit(cell="gru"),  # BUILT_IN by its registered name
}


def _figures(results: dict) -> dict:
    """Everything the experiment measured: not what ran (config), where (device) or how fast (train)."""
    return {key: value for key, value in results.items() if key not in ("config", "device", "train")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (results.json, folder) of the bandit experiment's run."""
    return {
        name: shared_runs.run_once(tmp_path_factory, bandit.run, config) for name, config in CONFIGS.items()
    }


def test_every_figure_of_the_bandit_experiment_equals_the_built_in_families(runs):
    assert CONFIGS["built_in"].train.make_family() == BUILT_IN
    scratch, built_in = (_figures(runs[name][0]) for name in ("scratch", "built_in"))
    assert scratch == built_in
    # ... and they are figures: the references, probes and the state machine all ran.
    summary = scratch["summary"]
    assert set(summary["return"]) == {"agent", "random", "thompson", "bayes_optimal"}
    assert "state_machine" in summary and "controls" in summary["probe"]


def test_the_saved_agent_reloads_with_the_family_instance_and_plays_as_trained(runs):
    results, folder = runs["scratch"]
    params, config = train.load_agent(folder / "agent", family=SCRATCH)
    assert config.make_family() == SCRATCH and config.num_seeds == 2
    built_in_params, _ = train.load_agent(runs["built_in"][1] / "agent")
    jax.tree.map(np.testing.assert_array_equal, params, built_in_params)
    # The reloaded agent on fresh tasks, beside the built-in family's with the same keys.
    agent, key = config.make_agent(), jax.random.key(7)
    played = {
        family: rollout(family, agent, train.select_seed(params, 0), key, sample_tasks(family, key, 64))
        for family in (SCRATCH, BUILT_IN)
    }
    np.testing.assert_array_equal(played[SCRATCH].rewards, played[BUILT_IN].rewards)
    np.testing.assert_array_equal(played[SCRATCH].features, played[BUILT_IN].features)


def test_gittins_and_the_exact_dp_play_the_own_family_as_the_built_in(runs):
    del runs  # the policies only need the families
    key = jax.random.key(3)
    for make_policy in (baselines.gittins, baselines.bayes_optimal, baselines.thompson_sampling):
        rewards = [
            baselines.run_policy(family, make_policy(family), key, sample_tasks(family, key, 128)).rewards
            for family in (SCRATCH, BUILT_IN)
        ]
        np.testing.assert_array_equal(*rewards)
    assert baselines.bayes_optimal_value(SCRATCH) == baselines.bayes_optimal_value(BUILT_IN)
