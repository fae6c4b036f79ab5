"""Saving and loading a trained population: its ``TrainConfig`` as JSON and its parameters as msgpack.

The parameters carry the population's leading seed axis ``[S, ...]`` (``S = config.num_seeds``).
``load_agent(path)`` returns the whole population; ``load_agent(path, seed=i)`` returns agent i
alone, with the one-seed config that trains exactly that agent (``TrainConfig.for_seed``).
Both files are written under temporary names and renamed into place, so an interrupted save
leaves either the previous agent or none, never a half-written one; anything wrong on loading
raises a ``ValueError`` naming the file and what is wrong with it.

A config whose family is an instance (``TrainConfig(family=my_family)``, registered or not) is
saved with its class and fields (``metabelief.tasks.registry.family_spec``). ``load_agent`` rebuilds
it from them when its class can be imported by name (a dataclass in an importable module); for one
defined in a script (``__main__``) or inside a function, pass it back:
``load_agent(path, family=my_family)``, which checks it against the saved class and fields.
The memory model (``cell``) and the algorithm are saved by name and rebuilt; your own agent
(``TrainConfig(agent=...)``) is saved by class only: pass it back, ``load_agent(path, agent=...)``.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
from flax import serialization

from metabelief.agents.base import Agent
from metabelief.tasks.base import PyTree, TaskFamily
from metabelief.train.config import TrainConfig
from metabelief.train.state import population_size, select_seed

CONFIG_FILE, PARAMS_FILE = "config.json", "params.msgpack"


def save_agent(directory: str | pathlib.Path, params: PyTree, config: TrainConfig) -> pathlib.Path:
    """Writes ``config.json`` and ``params.msgpack`` into ``directory`` (created if needed).

    ``params`` is a population ``[config.num_seeds, ...]``, as ``train`` returns it. A family
    instance in ``config`` is written as its class and fields (see the module docstring).
    """
    directory = pathlib.Path(directory)
    _check_shapes(params, config, f"params for {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    # Parameters first, config last: a folder whose config is in place has its parameters too.
    _write_atomically(directory / PARAMS_FILE, serialization.to_bytes(jax.device_get(params)))
    _write_atomically(directory / CONFIG_FILE, json.dumps(config.to_dict(), indent=2).encode())
    return directory


def load_agent(
    directory: str | pathlib.Path,
    seed: int | None = None,
    family: TaskFamily | None = None,
    agent: Agent | None = None,
) -> tuple[PyTree, TrainConfig]:
    """Reads an agent saved by ``save_agent``: ``(params, config)``.

    Args:
      directory: the folder ``save_agent`` wrote.
      seed: None for the whole population (``params [S, ...]`` and its config), or the index of
        one agent: its parameters (no seed axis) and ``config.for_seed(seed)``.
      family: the family instance of an agent saved with one (``TrainConfig(family=instance)``):
        checked against the saved class and fields, and used in the returned config. Needed when
        the saved family cannot be rebuilt from its record (a class defined in a script or inside
        a function); otherwise optional.
      agent: your own agent, for one saved with ``TrainConfig(agent=...)`` (checked against the
        saved class); a built-in cell is rebuilt by name.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"no saved agent at {directory}: not a folder")
    config_path, params_path = directory / CONFIG_FILE, directory / PARAMS_FILE
    for path in (config_path, params_path):
        if not path.is_file():
            raise ValueError(f"no saved agent at {directory}: {path.name} is missing")
    try:
        config = TrainConfig.from_dict(json.loads(config_path.read_text()), family=family, agent=agent)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path} is not a valid TrainConfig: {error}") from error
    template = _population_template(config)
    try:
        raw = serialization.msgpack_restore(params_path.read_bytes())
    except Exception as error:  # msgpack raises its own types for truncated or corrupt data
        raise ValueError(f"{params_path} is truncated or corrupt: {error}") from error
    try:
        params = serialization.from_state_dict(template, raw)
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"{params_path} does not hold the parameters {config_path} describes: {error}"
        ) from error
    _check_shapes(params, config, str(params_path))
    if seed is None:
        return params, config
    seed_config = config.for_seed(seed)  # checks the index
    return select_seed(params, seed), seed_config


def _population_template(config: TrainConfig) -> PyTree:
    """Shapes and dtypes of the population's parameters, without computing them."""
    agent = config.make_agent()
    keys = jax.ShapeDtypeStruct((config.num_seeds,), jax.eval_shape(jax.random.key, 0).dtype)
    return jax.eval_shape(jax.vmap(agent.init), keys)


def _check_shapes(params: PyTree, config: TrainConfig, what: str) -> None:
    """Raises unless ``params`` has the structure and shapes of ``config``'s population."""
    expected = _population_template(config)
    problem = None
    if jax.tree.structure(params) != jax.tree.structure(expected):
        problem = "a different set of parameters"
    elif population_size(params) != config.num_seeds:
        problem = f"{population_size(params)} seeds where num_seeds is {config.num_seeds}"
    else:
        for actual, wanted in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
            if tuple(actual.shape) != tuple(wanted.shape):
                problem = f"an array of shape {tuple(actual.shape)} where {tuple(wanted.shape)} belongs"
                break
    if problem:
        raise ValueError(
            f"{what}: {problem} for the config (family {config.family_name}, agent {config.agent_name}, "
            f"hidden_size {config.hidden_size}, num_seeds {config.num_seeds})"
        )


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
