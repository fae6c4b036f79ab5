"""Training agents over task distributions: A2C (full-episode BPTT) or recurrent PPO, optionally
with a predictive objective; seeds as a vmapped axis."""

from metabelief.train.a2c import a2c_loss, discounted_returns
from metabelief.train.checkpoint import load_agent, save_agent
from metabelief.train.config import ALGORITHMS, TrainConfig
from metabelief.train.loop import population_update, train, update
from metabelief.train.ppo import gae, ppo_loss
from metabelief.train.state import (
    TrainResult,
    TrainState,
    init_population,
    init_state,
    optimiser,
    population_size,
    select_seed,
)

__all__ = [
    "ALGORITHMS",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "a2c_loss",
    "discounted_returns",
    "gae",
    "init_population",
    "init_state",
    "load_agent",
    "optimiser",
    "population_size",
    "population_update",
    "ppo_loss",
    "save_agent",
    "select_seed",
    "train",
    "update",
]
