"""metabelief: exact beliefs for recurrent meta-RL agents, in JAX.

The public surface::

    family = metabelief.make("bernoulli_bandit", num_arms=2, horizon=100)
    metabelief.register("my_family", MyFamily)
    metabelief.families()
    metabelief.check_family(family)  # the conformance kit, metabelief/testing

    result = metabelief.train.train(metabelief.TrainConfig(family="bernoulli_bandit", num_seeds=5))
    params = result.seed_params(0)  # result.params: all 5 agents, a leading [5] axis
    # any memory model or algorithm: TrainConfig(cell="gru", algorithm="ppo", predictive_coef=0.5),
    # or your own network meeting the agent protocol: TrainConfig(agent=my_agent)
    agent = config.make_agent()  # metabelief.agents: the protocol and the built-in memory models
    trajectory = metabelief.rollout.rollout(family, agent, params, key, tasks)
    sizes = (n_fit, n_val, n_test)  # tasks (lanes) on each side of the probe
    moments = metabelief.rollout.probe_moments(family, agent, params, sizes, history=trajectory)
    metabelief.probes.linear_probe(moments, x=slice(0, 48), y=slice(48, 52))
"""

from metabelief import agents, baselines, probes, rollout, sharding, tasks, testing, train
from metabelief.tasks import TaskFamily, families, make, register
from metabelief.train import TrainConfig

check_family = testing.check_family

__version__ = "0.1.0"

__all__ = [
    "TaskFamily",
    "TrainConfig",
    "__version__",
    "agents",
    "baselines",
    "check_family",
    "families",
    "make",
    "probes",
    "register",
    "rollout",
    "sharding",
    "tasks",
    "testing",
    "train",
]
