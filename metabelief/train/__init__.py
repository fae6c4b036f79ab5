"""Training recurrent agents over task distributions: A2C with full-episode BPTT."""

from metabelief.train.a2c import (
    TrainResult,
    TrainState,
    a2c_loss,
    discounted_returns,
    init_population,
    init_state,
    population_size,
    population_update,
    select_seed,
    train,
    update,
)
from metabelief.train.checkpoint import load_agent, save_agent
from metabelief.train.config import TrainConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "a2c_loss",
    "discounted_returns",
    "init_population",
    "init_state",
    "load_agent",
    "population_size",
    "population_update",
    "save_agent",
    "select_seed",
    "train",
    "update",
]
