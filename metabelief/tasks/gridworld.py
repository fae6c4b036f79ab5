"""A hidden-goal gridworld: find the goal, then return to it again and again within one episode.

In the spirit of the maze tasks of Wang et al. (2016) and Duan et al. (2016): the goal is one of
G candidate cells, uniform a priori. Stepping onto it pays 1 and puts the agent back at the
start, so a good agent explores until it finds the goal and then exploits the shortest path.
Moves are deterministic, so the exact posterior is uniform over the candidates the history has
not ruled out: a reward at cell c pins the goal to c, entering a candidate cell without reward
rules it out.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metabelief.tasks import validation
from metabelief.tasks.base import TaskFamily
from metabelief.tasks.tabular import TabularFamily

Cell = tuple[int, int]  # (row, col)
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # actions: up, right, down, left


@struct.dataclass
class GoalTask:
    goal: jax.Array  # int32[]: index into the family's candidate goals


@struct.dataclass
class GridState:
    position: jax.Array  # int32[]: cell index row * size + col
    time: jax.Array  # int32[]: steps taken in the episode


@struct.dataclass
class GoalBelief:
    possible: jax.Array  # bool[G]: candidates the history has not ruled out


@dataclasses.dataclass(frozen=True)
class Gridworld(TaskFamily):
    """A ``size`` x ``size`` grid; the goal is uniform over ``goals``.

    Observation: one-hot of the agent's cell, ``float32[size * size]`` (cell = row * size + col).
    Action: ``int32[]``, 0 up, 1 right, 2 down, 3 left; a move into a wall or off the grid stays.
    Reward: ``float32[]``, 1 on stepping onto the goal, after which the agent is back at
    ``start``; else 0. Termination: ``done`` once ``horizon`` steps have been taken.
    State: ``GridState``. Belief: ``GoalBelief``. Belief features: the posterior over the goal
    candidates, ``float32[G]``. True features: the one-hot of the goal, ``float32[G]``. A history
    no candidate goal could produce gives a NaN belief. Capability (``metabelief.tasks.base``):
    ``GoalCandidates`` (``move_table``, ``distance_table``, ``goal_cells``, ``current_cell``,
    ``possible_goals``).

    Args:
      size: cells per side (>= 2).
      goals: candidate goal cells (default: every free cell except the start).
      start: the start cell (default: the centre).
      walls: blocked cells.
      horizon: steps per episode.
    """

    size: int = 5
    goals: tuple[Cell, ...] | None = None
    start: Cell | None = None
    walls: tuple[Cell, ...] = ()
    horizon: int = 50

    num_actions = 4  # a class constant, not a field: up, right, down, left

    def __post_init__(self) -> None:
        size = validation.integer_at_least("size", self.size, 2)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "horizon", validation.integer_at_least("horizon", self.horizon, 1))
        walls = tuple(sorted(set(self._cells("walls", self.walls))))
        start = self._cells("start", [(size // 2, size // 2) if self.start is None else self.start])[0]
        if start in walls:
            raise ValueError(f"start {start} is a wall")
        if self.goals is None:
            goals = tuple((r, c) for r in range(size) for c in range(size) if (r, c) not in {start, *walls})
        else:
            goals = self._cells("goals", self.goals)
        if not goals:
            raise ValueError("goals must hold at least one cell")
        if len(set(goals)) != len(goals):
            raise ValueError(f"goals must not repeat a cell, got {goals}")
        for goal in goals:
            if goal in walls or goal == start:
                raise ValueError(f"goals must be free cells other than the start, got {goal}")
        object.__setattr__(self, "walls", walls)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "goals", goals)

    def _cells(self, name: str, cells) -> tuple[Cell, ...]:
        try:
            cells = tuple((int(r), int(c)) for r, c in cells)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be (row, col) pairs, got {cells!r}") from None
        for r, c in cells:
            if not (0 <= r < self.size and 0 <= c < self.size):
                raise ValueError(f"{name} cell {(r, c)} is off the {self.size} x {self.size} grid")
        return cells

    @property
    def obs_size(self) -> int:
        return self.size * self.size

    @property
    def num_goals(self) -> int:
        return len(self.goals)

    def move_table(self) -> np.ndarray:
        """``int32[size * size, 4]``: the cell each action leads to from each cell."""
        rows, cols = np.divmod(np.arange(self.size * self.size), self.size)
        target_rows = np.clip(rows[:, None] + MOVES[:, 0], 0, self.size - 1)
        target_cols = np.clip(cols[:, None] + MOVES[:, 1], 0, self.size - 1)
        targets = target_rows * self.size + target_cols
        blocked = np.isin(targets, [r * self.size + c for r, c in self.walls])
        return np.where(blocked, np.arange(self.size * self.size)[:, None], targets).astype(np.int32)

    def distance_table(self) -> np.ndarray:
        """``int32[size * size, size * size]``: fewest moves from each cell to each cell.

        Breadth-first search over ``move_table``; unreachable pairs get ``size * size``. Moves
        into a cell are counted whatever it holds (the return to the start on the goal is
        ignored), so this is the length of the path the agent walks to reach a cell.
        """
        num_cells = self.size * self.size
        moves = self.move_table()
        distances = np.full((num_cells, num_cells), num_cells, np.int32)
        for source in range(num_cells):
            distances[source, source] = 0
            frontier = [source]
            while frontier:
                reached = np.unique(moves[frontier])
                reached = reached[distances[source, reached] == num_cells]
                distances[source, reached] = distances[source, frontier[0]] + 1
                frontier = list(reached)
        return distances

    def goal_cells(self) -> np.ndarray:
        """``int32[G]``: the candidate goals' cell indices."""
        return np.array([r * self.size + c for r, c in self.goals], np.int32)

    def current_cell(self, obs: jax.Array) -> jax.Array:
        """``int32[]``: the agent's cell, read from its one-hot observation (``GoalCandidates``)."""
        return jnp.argmax(obs).astype(jnp.int32)

    def possible_goals(self, belief: GoalBelief) -> jax.Array:
        """``bool[G]``: the candidates the history has not ruled out (``GoalCandidates``)."""
        return belief.possible

    def sample_task(self, key: jax.Array) -> GoalTask:
        """Draws the goal uniformly from the candidates."""
        return GoalTask(goal=jax.random.randint(key, (), 0, self.num_goals, jnp.int32))

    def reset(self, key: jax.Array, task: GoalTask) -> tuple[GridState, jax.Array]:
        """Starts at the start cell."""
        del key, task
        position = jnp.asarray(self._start_cell, jnp.int32)
        return GridState(position=position, time=jnp.zeros((), jnp.int32)), self._observe(position)

    def step(
        self, key: jax.Array, task: GoalTask, state: GridState, action: jax.Array
    ) -> tuple[GridState, jax.Array, jax.Array, jax.Array]:
        """Moves; on the goal, pays 1 and returns to the start."""
        del key
        target = jnp.asarray(self.move_table())[state.position, action]
        found = target == jnp.asarray(self.goal_cells())[task.goal]
        position = jnp.where(found, self._start_cell, target).astype(jnp.int32)
        state = GridState(position=position, time=state.time + 1)
        return state, self._observe(position), found.astype(jnp.float32), state.time >= self.horizon

    def belief_init(self, obs: jax.Array) -> GoalBelief:
        """Every candidate is possible."""
        del obs
        return GoalBelief(possible=jnp.ones((self.num_goals,), bool))

    def belief_update(
        self, belief: GoalBelief, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array
    ) -> GoalBelief:
        """The cell just entered is the goal if the step paid, and is not the goal otherwise."""
        del next_obs
        target = jnp.asarray(self.move_table())[jnp.argmax(obs), action]
        is_target = jnp.asarray(self.goal_cells()) == target
        consistent = jnp.where(reward > 0.5, is_target, ~is_target)
        return GoalBelief(possible=belief.possible & consistent)

    def belief_features(self, belief: GoalBelief) -> jax.Array:
        """Posterior over the candidates, ``float32[G]``: uniform over those still possible."""
        possible = belief.possible.astype(jnp.float32)
        return possible / possible.sum()

    def true_features(self, task: GoalTask, state: GridState) -> jax.Array:
        """The one-hot of the goal, ``float32[G]``."""
        del state
        return jax.nn.one_hot(task.goal, self.num_goals, dtype=jnp.float32)

    def as_tabular(self) -> TabularFamily:
        """The same task set as a ``TabularFamily``: one deterministic MDP per candidate goal."""
        num_cells = self.size * self.size
        targets = self.move_table()  # [S, A]
        found = targets[None] == self.goal_cells()[:, None, None]  # [G, S, A]
        next_cells = np.where(found, self._start_cell, targets[None])
        transitions = np.eye(num_cells)[next_cells]  # [G, S, A, S]
        init_probs = np.eye(num_cells)[self._start_cell]
        return TabularFamily(
            transitions, found.astype(np.float64), init_probs=init_probs, horizon=self.horizon
        )

    @property
    def _start_cell(self) -> int:
        return self.start[0] * self.size + self.start[1]

    def _observe(self, position: jax.Array) -> jax.Array:
        return jax.nn.one_hot(position, self.obs_size, dtype=jnp.float32)
