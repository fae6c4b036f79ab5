"""Training recurrent agents over task distributions: A2C with full-episode BPTT."""

from metabelief.train.a2c import (
    TrainResult,
    TrainState,
    a2c_loss,
    discounted_returns,
    init_state,
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
    "init_state",
    "load_agent",
    "save_agent",
    "train",
    "update",
]
