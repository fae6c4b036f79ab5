"""An agent of one's own, first class: a GRU written here from its equations, meeting only the
agent protocol (``metabelief.agents.base``; no ``unroll``, no registration), trained with
``TrainConfig(agent=...)``, saved and reloaded with ``load_agent(path, agent=...)`` and run
through the whole bandit experiment (probes, controls, state-machine simulation, intervention).
Its layers carry the names flax's ``GRUCell`` gives its own (``ir``, ``iz``, ``in``, ``hr``,
``hz``, ``hn`` under ``gru``; heads ``policy`` and ``value``), so flax initialises both alike from
one key and, under the same keys, every figure equals the built-in ``gru``'s.

Beside it, the bandit experiment end to end with the linear recurrent model trained by PPO with
the predictive objective, and with the belief oracle.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metabelief import agents, train
from metabelief.experiments import bandit
from tests import shared_runs

TINY = shared_runs.TINY_TRAIN


class _GRUCellFromEquations(nn.Module):
    """r, z gates and the candidate n: h' = (1 - z) n + z h."""

    hidden_size: int

    @nn.compact
    def __call__(self, h, x):
        def dense(name, bias=True):
            init = nn.initializers.orthogonal() if name.startswith("h") else nn.initializers.lecun_normal()
            return nn.Dense(self.hidden_size, use_bias=bias, kernel_init=init, name=name)

        r = jax.nn.sigmoid(dense("ir")(x) + dense("hr", bias=False)(h))
        z = jax.nn.sigmoid(dense("iz")(x) + dense("hz", bias=False)(h))
        n = jnp.tanh(dense("in")(x) + r * dense("hn")(h))
        return (1.0 - z) * n + z * h


class _GRUNetwork(nn.Module):
    """One GRU step, then linear policy and value heads."""

    num_actions: int
    hidden_size: int

    @nn.compact
    def __call__(self, h, x):
        h = _GRUCellFromEquations(self.hidden_size, name="gru")(h, x)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy")(h)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(h)
        return h, logits, value[..., 0]


@dataclasses.dataclass(frozen=True)
class ScratchGRU:
    """The agent protocol and nothing more: sizes, init, carry, inputs, step, memory and heads."""

    num_actions: int
    obs_size: int
    hidden_size: int

    @property
    def input_size(self) -> int:
        return self.obs_size + self.num_actions + 1

    @property
    def memory_size(self) -> int:
        return self.hidden_size

    @property
    def network(self) -> _GRUNetwork:
        return _GRUNetwork(self.num_actions, self.hidden_size)

    def init(self, key):
        return self.network.init(key, self.initial_carry(1), jnp.zeros((1, self.input_size)))

    def initial_carry(self, num_tasks):
        return jnp.zeros((num_tasks, self.hidden_size))

    def inputs(self, obs, prev_action, prev_reward, time):
        del time
        one_hot = jax.nn.one_hot(prev_action, self.num_actions)
        return jnp.concatenate([obs.astype(jnp.float32), one_hot, prev_reward[:, None]], axis=-1)

    def step(self, params, carry, inputs):
        return self.network.apply(params, carry, inputs)

    def memory(self, carry):
        return carry

    def carry_from_memory(self, memory):
        return memory

    def heads(self, params, readout):
        policy, value = params["params"]["policy"], params["params"]["value"]
        logits = readout @ policy["kernel"] + policy["bias"]
        return logits, (readout @ value["kernel"] + value["bias"])[..., 0]


SCRATCH = ScratchGRU(num_actions=2, obs_size=0, hidden_size=TINY.hidden_size)


def _figures(results: dict) -> dict:
    """Everything the experiment measured: not what ran (config), where (device) or how fast (train)."""
    return {key: value for key, value in results.items() if key not in ("config", "device", "train")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (results.json, folder) of the bandit experiment's run; the built-in GRU's is also
    ``test_own_family_end_to_end``'s, run once for both (``shared_runs``)."""
    configs = {
        "scratch": shared_runs.tiny_bandit(agent=SCRATCH),
        "built_in": shared_runs.tiny_bandit(cell="gru"),
    }
    return {
        name: shared_runs.run_once(tmp_path_factory, bandit.run, config) for name, config in configs.items()
    }


def test_the_scratch_gru_meets_the_protocol_and_steps_as_the_built_in_gru():
    built_in = agents.agent_for(TINY.make_family(), hidden_size=TINY.hidden_size, cell="gru")
    agents.check_agent(SCRATCH)
    params = SCRATCH.init(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, params, built_in.init(jax.random.key(0)))
    inputs = jax.random.normal(jax.random.key(1), (5, SCRATCH.input_size))
    carry = jax.random.normal(jax.random.key(2), (5, SCRATCH.hidden_size))
    for mine, theirs in zip(
        SCRATCH.step(params, carry, inputs), built_in.step(params, carry, inputs), strict=True
    ):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_every_figure_of_the_bandit_experiment_equals_the_built_in_grus(runs):
    scratch, built_in = (_figures(runs[name][0]) for name in ("scratch", "built_in"))
    assert scratch == built_in
    summary = scratch["summary"]
    assert "state_machine" in summary and "controls" in summary["probe"] and "intervention" in summary


def test_the_saved_agent_reloads_only_with_the_agent_given_back(runs):
    folder = runs["scratch"][1] / "agent"
    params, config = train.load_agent(folder, agent=SCRATCH)
    assert config.make_agent() is SCRATCH and config.agent_name == "ScratchGRU"
    built_in_params, built_in_config = train.load_agent(runs["built_in"][1] / "agent")
    assert built_in_config.cell == "gru"
    jax.tree.map(np.testing.assert_array_equal, params, built_in_params)
    with pytest.raises(ValueError, match="your own agent .*ScratchGRU.* pass it back"):
        train.load_agent(folder)
    with pytest.raises(ValueError, match="saved with the built-in cell"):
        train.load_agent(runs["built_in"][1] / "agent", agent=SCRATCH)


def test_an_agent_missing_a_member_of_the_protocol_is_refused_by_name():
    no_heads = type("NoHeads", (), {member: None for member in agents.REQUIRED_MEMBERS if member != "heads"})
    with pytest.raises(ValueError, match="agent must provide 'heads'"):
        train.TrainConfig(agent=no_heads())


@pytest.mark.parametrize(
    "fields",
    [dict(cell="lru", algorithm="ppo", predictive_coef=0.5, ppo_minibatches=2), dict(cell="oracle")],
    ids=["lru-ppo-predictive", "oracle"],
)
def test_the_bandit_experiment_runs_end_to_end_for_other_agents(tmp_path, fields):
    results = bandit.run(shared_runs.tiny_bandit(**fields), tmp_path, progress=False).to_dict()
    summary = results["summary"]
    assert results["config"]["train"]["cell"] == fields["cell"]
    for name in ("trained", "untrained"):
        simulation = summary["state_machine"][name]["agent"]["agent_to_bayes"]["linear"]
        assert np.isfinite(simulation["state_dissimilarity"]["mean"])
    r2 = summary["probe"]["networks"]["trained"]["posterior_mean"]["r2"]["mean"]
    assert np.isfinite(r2)
    assert (tmp_path / "results.json").is_file()
