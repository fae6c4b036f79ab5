"""Saving and loading a trained agent: its ``TrainConfig`` as JSON and its parameters as msgpack."""

from __future__ import annotations

import json
import pathlib

import jax
from flax import serialization

from metabelief.tasks.base import PyTree
from metabelief.train.config import TrainConfig

CONFIG_FILE, PARAMS_FILE = "config.json", "params.msgpack"


def save_agent(directory: str | pathlib.Path, params: PyTree, config: TrainConfig) -> pathlib.Path:
    """Writes ``config.json`` and ``params.msgpack`` into ``directory`` (created if needed)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    (directory / PARAMS_FILE).write_bytes(serialization.to_bytes(jax.device_get(params)))
    return directory


def load_agent(directory: str | pathlib.Path) -> tuple[PyTree, TrainConfig]:
    """Reads an agent saved by ``save_agent``: ``(params, config)``."""
    directory = pathlib.Path(directory)
    config = TrainConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    template = jax.eval_shape(config.make_agent().init, jax.random.key(0))
    params = serialization.from_bytes(template, (directory / PARAMS_FILE).read_bytes())
    return params, config
