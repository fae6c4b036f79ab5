"""The hidden-goal gridworld: scripted dynamics, beliefs against goal enumeration and the tabular twin.

References are computed here without the package: a plain-Python simulator of the grid
(``move``, ``simulate``) replays a recorded history under every candidate goal, and the posterior
is uniform over the goals that reproduce it. ``as_tabular()`` is checked against the same
simulator cell by cell and then run side by side with the gridworld.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metabelief
from metabelief.tasks import Gridworld, TabularFamily
from metabelief.tasks.gridworld import GoalTask
from metabelief.tasks.tabular import TabularTask
from metabelief.testing import check_family, random_rollout, sample_tasks

ATOL = 1e-6
UP, RIGHT, DOWN, LEFT = range(4)
STEPS = {UP: (-1, 0), RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1)}

rollout = jax.jit(random_rollout, static_argnames=("family", "num_steps"))

#   c0 c1 c2 c3
# r0 .  .  .  G1
# r1 .  S  #  .
# r2 .  #  G0 .
# r3 G2 .  .  .
WALLED = dict(size=4, start=(1, 1), walls=((1, 2), (2, 1)), goals=((2, 2), (0, 3), (3, 0)))


def move(size: int, walls, cell: tuple[int, int], action: int) -> tuple[int, int]:
    """The cell ``action`` leads to: off the grid or into a wall stays put."""
    row, col = cell[0] + STEPS[action][0], cell[1] + STEPS[action][1]
    if not (0 <= row < size and 0 <= col < size) or (row, col) in set(walls):
        return cell
    return row, col


def simulate(size, walls, start, goal, actions) -> tuple[list, list]:
    """Positions after each action and the rewards, from ``start`` with the goal at ``goal``."""
    position, positions, rewards = start, [], []
    for action in actions:
        target = move(size, walls, position, int(action))
        found = target == goal
        position = start if found else target
        positions.append(position)
        rewards.append(float(found))
    return positions, rewards


def cell_index(size: int, cell: tuple[int, int]) -> int:
    return cell[0] * size + cell[1]


def default_goals(size, start, walls) -> list[tuple[int, int]]:
    return [(r, c) for r in range(size) for c in range(size) if (r, c) != start and (r, c) not in set(walls)]


def reference_posteriors(family: Gridworld, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray):
    """float64 [T + 1, N, G]: uniform over the candidate goals that reproduce each history prefix.

    A goal reproduces a prefix when simulating the recorded actions with it gives the recorded
    positions (read off the one-hot obs) and rewards.
    """
    size, walls, start, goals = family.size, family.walls, tuple(family.start), list(family.goals)
    positions = obs.argmax(axis=-1)  # [T + 1, N]
    num_steps, num_histories = actions.shape
    alive = np.zeros((num_steps + 1, num_histories, len(goals)), bool)
    for n in range(num_histories):
        for g, goal in enumerate(goals):
            cells, paid = simulate(size, walls, start, tuple(goal), actions[:, n])
            matches = (np.array([cell_index(size, c) for c in cells]) == positions[1:, n]) & (
                np.array(paid) == rewards[:, n]
            )
            alive[:, n, g] = np.cumprod(
                np.concatenate([[positions[0, n] == cell_index(size, start)], matches])
            )
    assert alive.any(axis=-1).all(), "a history no candidate goal reproduces"
    return alive / alive.sum(axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnames="family")
def features_along(family, obs: jax.Array, actions: jax.Array, rewards: jax.Array) -> jax.Array:
    """``family``'s belief features fed a recorded history: obs [T + 1, N, S], actions, rewards [T, N].

    Returns float32 [T + 1, N, F]; row 0 is ``belief_init``'s.
    """

    def one_history(obs, actions, rewards):
        belief = family.belief_init(obs[0])

        def update(belief, transition):
            belief = family.belief_update(belief, *transition)
            return belief, family.belief_features(belief)

        _, features = jax.lax.scan(update, belief, (obs[:-1], actions, rewards, obs[1:]))
        return jnp.concatenate([family.belief_features(belief)[None], features])

    return jax.vmap(one_history, in_axes=1, out_axes=1)(obs, actions, rewards)


@functools.partial(jax.jit, static_argnames="family")
def scripted(family, task, actions: jax.Array) -> dict[str, jax.Array]:
    """One episode of ``task`` under a fixed action sequence; the belief follows along."""
    state, obs = family.reset(jax.random.key(0), task)
    belief = family.belief_init(obs)

    def one_step(carry, action):
        state, obs, belief = carry
        state, next_obs, reward, done = family.step(jax.random.key(1), task, state, action)
        belief = family.belief_update(belief, obs, action, reward, next_obs)
        record = dict(
            obs=next_obs,
            reward=reward,
            done=done,
            time=state.time,
            features=family.belief_features(belief),
            truth=family.true_features(task, state),
        )
        return (state, next_obs, belief), record

    _, per_step = jax.lax.scan(one_step, (state, obs, belief), actions)
    return dict(reset_obs=obs, reset_features=family.belief_features(belief), **per_step)


# ---------------------------------------------------------------------------------------------
# Dynamics


# (action, position after it, reward) with the goal at G0 = (2, 2), from the start (1, 1).
SCRIPT_GOAL_0 = [
    (RIGHT, (1, 1), 0),  # into the wall (1, 2)
    (DOWN, (1, 1), 0),  # into the wall (2, 1)
    (UP, (0, 1), 0),
    (LEFT, (0, 0), 0),
    (LEFT, (0, 0), 0),  # off the grid
    (UP, (0, 0), 0),  # off the grid
    (DOWN, (1, 0), 0),
    (DOWN, (2, 0), 0),
    (DOWN, (3, 0), 0),  # G2, not this task's goal: rules it out
    (DOWN, (3, 0), 0),  # off the grid
    (RIGHT, (3, 1), 0),
    (RIGHT, (3, 2), 0),
    (UP, (1, 1), 1),  # onto G0: paid, back at the start
    (LEFT, (1, 0), 0),
    (RIGHT, (1, 1), 0),  # back onto the start cell by walking: no reward
    (UP, (0, 1), 0),
    (RIGHT, (0, 2), 0),
    (RIGHT, (0, 3), 0),  # G1, not the goal
    (RIGHT, (0, 3), 0),  # off the grid
    (DOWN, (1, 3), 0),
    (DOWN, (2, 3), 0),
    (LEFT, (1, 1), 1),  # onto G0 from the other side
    (DOWN, (1, 1), 0),  # wall
]
# The posterior over (G0, G1, G2) after each step of SCRIPT_GOAL_0, by hand.
BELIEF_GOAL_0 = [[1 / 3] * 3] * 8 + [[0.5, 0.5, 0.0]] * 4 + [[1.0, 0.0, 0.0]] * 11
# The goal at G2 = (3, 0): the third step pays.
SCRIPT_GOAL_2 = [(LEFT, (1, 0), 0), (DOWN, (2, 0), 0), (DOWN, (1, 1), 1), (UP, (0, 1), 0), (RIGHT, (0, 2), 0)]
BELIEF_GOAL_2 = [[1 / 3] * 3] * 2 + [[0.0, 0.0, 1.0]] * 3


@pytest.mark.parametrize(
    "goal, script, beliefs", [(0, SCRIPT_GOAL_0, BELIEF_GOAL_0), (2, SCRIPT_GOAL_2, BELIEF_GOAL_2)]
)
def test_scripted_moves_walls_edges_and_teleport_on_reward(goal, script, beliefs):
    horizon = 10
    family = Gridworld(**WALLED, horizon=horizon)
    assert (family.num_actions, family.obs_size, family.horizon) == (4, 16, horizon)
    actions, positions, rewards = zip(*script, strict=True)
    out = jax.device_get(scripted(family, GoalTask(goal=jnp.asarray(goal, jnp.int32)), jnp.asarray(actions)))
    np.testing.assert_array_equal(out["reset_obs"], np.eye(16, dtype=np.float32)[cell_index(4, (1, 1))])
    assert (
        out["obs"].dtype == np.float32 and out["reward"].dtype == np.float32 and out["done"].dtype == np.bool_
    )
    np.testing.assert_array_equal(out["obs"], np.eye(16)[[cell_index(4, p) for p in positions]])
    np.testing.assert_array_equal(out["reward"], rewards)
    steps_taken = np.arange(1, len(script) + 1)
    np.testing.assert_array_equal(out["time"], steps_taken)
    np.testing.assert_array_equal(out["done"], steps_taken >= horizon)
    np.testing.assert_array_equal(out["truth"], np.broadcast_to(np.eye(3)[goal], (len(script), 3)))
    np.testing.assert_allclose(out["reset_features"], [1 / 3] * 3, rtol=0.0, atol=ATOL)
    np.testing.assert_allclose(out["features"], beliefs, rtol=0.0, atol=ATOL)


def test_defaults_start_in_the_centre_with_every_other_free_cell_a_goal():
    family = metabelief.make("gridworld")
    assert family == Gridworld()
    assert (family.size, family.horizon, family.num_actions, family.obs_size) == (5, 50, 4, 25)
    assert tuple(family.start) == (2, 2)
    assert sorted(map(tuple, family.goals)) == default_goals(5, (2, 2), ())
    walled = metabelief.make("gridworld", size=4, start=(0, 0), walls=((1, 1), (2, 3)), horizon=7)
    assert walled == Gridworld(size=4, start=(0, 0), walls=((1, 1), (2, 3)), horizon=7)
    assert sorted(map(tuple, walled.goals)) == default_goals(4, (0, 0), ((1, 1), (2, 3)))
    task = GoalTask(goal=jnp.asarray(0, jnp.int32))
    features = jax.eval_shape(lambda: walled.belief_features(walled.belief_init(jnp.zeros(16))))
    truth = jax.eval_shape(lambda: walled.true_features(task, walled.reset(jax.random.key(0), task)[0]))
    assert features.shape == truth.shape == (13,)


def test_sample_task_is_uniform_over_the_candidate_goals():
    family = Gridworld(**WALLED)
    num_tasks = 12_000
    goals = np.asarray(
        jax.jit(sample_tasks, static_argnums=(0, 2))(family, jax.random.key(3), num_tasks).goal
    )
    counts = np.bincount(goals, minlength=3)
    assert counts.size == 3
    assert (np.abs(counts - num_tasks / 3) < 5.0 * np.sqrt(num_tasks * 2 / 9)).all(), counts


# ---------------------------------------------------------------------------------------------
# Beliefs on random histories

GRIDS = {
    "walled-3-goals": Gridworld(**WALLED, horizon=30),
    "walled-default-goals": Gridworld(size=4, walls=((0, 1), (1, 3), (3, 3)), horizon=30),
    "3x3": Gridworld(size=3, horizon=30),
}


@pytest.fixture(scope="module", params=list(GRIDS))
def grid_histories(request):
    """Random-action histories on every candidate goal (4 lanes each), 80 steps: past the horizon."""
    family = GRIDS[request.param]
    num_goals = len(family.goals)
    tasks = GoalTask(goal=jnp.repeat(jnp.arange(num_goals, dtype=jnp.int32), 4))
    return family, tasks, jax.device_get(rollout(family, jax.random.key(11), tasks, num_steps=80))


def test_belief_equals_goal_enumeration(grid_histories):
    family, tasks, out = grid_histories
    expected = reference_posteriors(family, out.obs, out.actions, out.rewards)
    assert out.features.dtype == np.float32 and out.features.shape == expected.shape
    np.testing.assert_allclose(out.features, expected, rtol=0.0, atol=ATOL)
    np.testing.assert_array_equal(out.truth[0], np.eye(len(family.goals))[np.asarray(tasks.goal)])
    # The histories cover every kind of update: collapse on a reward, partial ruling out, none.
    alive = (expected > 0).sum(axis=-1)
    assert (out.rewards.sum(axis=0) > 0).any() and (alive[-1] == 1).any()
    assert ((alive > 1) & (alive < len(family.goals))).any()


def test_belief_equals_the_tabular_twins_belief(grid_histories):
    family, _, out = grid_histories
    twin = family.as_tabular()
    twin_features = np.asarray(features_along(twin, out.obs, out.actions, out.rewards))
    assert twin_features.shape == out.features.shape
    np.testing.assert_allclose(out.features, twin_features, rtol=0.0, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# The tabular twin


@pytest.mark.parametrize("name", list(GRIDS))
def test_as_tabular_tables_match_the_grid(name):
    family = GRIDS[name]
    twin = family.as_tabular()
    size, goals, start = family.size, [tuple(g) for g in family.goals], tuple(family.start)
    num_cells = size * size
    assert isinstance(twin, TabularFamily)
    assert (twin.num_tasks, twin.num_states, twin.num_actions) == (len(goals), num_cells, 4)
    assert (twin.obs_size, twin.horizon) == (num_cells, family.horizon)
    transitions, reward_probs = np.asarray(twin.transitions), np.asarray(twin.reward_probs)
    np.testing.assert_allclose(transitions.sum(axis=-1), 1.0, rtol=0.0, atol=1e-12)
    assert set(np.unique(transitions)) <= {0.0, 1.0} and set(np.unique(reward_probs)) <= {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(twin.prior), np.full(len(goals), 1.0 / len(goals)), atol=1e-12)
    np.testing.assert_array_equal(
        np.broadcast_to(twin.init_probs, (len(goals), num_cells)),
        np.broadcast_to(np.eye(num_cells)[cell_index(size, start)], (len(goals), num_cells)),
    )
    # Every free cell, action and goal against the plain-Python simulator.
    free = [(r, c) for r in range(size) for c in range(size) if (r, c) not in set(family.walls)]
    for g, goal in enumerate(goals):
        for cell in free:
            for action in range(4):
                target = move(size, family.walls, cell, action)
                next_cell = start if target == goal else target
                where = (g, cell_index(size, cell), action)
                assert transitions[where].argmax() == cell_index(size, next_cell), (where, next_cell)
                assert reward_probs[where] == float(target == goal), where


def test_twin_steps_like_the_grid_whatever_the_keys():
    # The twin samples its next cell and reward from 0/1 tables, so (checked here rather than
    # assumed) its steps are deterministic: every key gives the grid's step.
    family = Gridworld(**WALLED, horizon=30)
    twin = family.as_tabular()
    free = [cell_index(4, (r, c)) for r in range(4) for c in range(4) if (r, c) not in set(family.walls)]
    goal, cell, action = (a.ravel() for a in np.meshgrid(np.arange(3), free, np.arange(4), indexing="ij"))
    keys = jax.random.split(jax.random.key(12), (goal.size, 16))

    def grid_step(key, goal, cell, action):
        state = family.reset(key, GoalTask(goal=goal))[0].replace(position=cell)
        return family.step(key, GoalTask(goal=goal), state, action)[1:]

    def twin_step(key, goal, cell, action):
        state = twin.reset(key, TabularTask(index=goal))[0].replace(position=cell)
        return twin.step(key, TabularTask(index=goal), state, action)[1:]

    args = [jnp.asarray(x, jnp.int32) for x in (goal, cell, action)]
    grid = jax.jit(jax.vmap(grid_step))(keys[:, 0], *args)
    every_key = jax.jit(jax.vmap(jax.vmap(twin_step, in_axes=(0, None, None, None))))(keys, *args)
    for grid_out, twin_out in zip(grid, every_key, strict=True):
        np.testing.assert_array_equal(
            np.asarray(twin_out), np.broadcast_to(np.asarray(grid_out)[:, None], twin_out.shape)
        )
    assert np.asarray(grid[1]).sum() > 0  # some of the steps pay


def test_twin_rollout_equals_the_grid_rollout_with_the_same_key():
    family = Gridworld(**WALLED, horizon=30)
    goals = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 4)
    key = jax.random.key(13)
    grid = jax.device_get(rollout(family, key, GoalTask(goal=goals), num_steps=60))
    twin = jax.device_get(rollout(family.as_tabular(), key, TabularTask(index=goals), num_steps=60))
    for name in ("obs", "actions", "rewards", "dones", "truth"):
        np.testing.assert_array_equal(getattr(twin, name), getattr(grid, name), err_msg=name)
    np.testing.assert_allclose(twin.features, grid.features, rtol=0.0, atol=ATOL)
    assert grid.rewards.sum() > 0


# ---------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(size=1), "size"),
        (dict(size=0), "size"),
        (dict(size=2.5), "size"),
        (dict(size=3, goals=((1, 1),)), "goals"),  # the default start, (1, 1)
        (dict(size=3, start=(0, 0), goals=((0, 0), (2, 2))), "goals"),
        (dict(size=3, walls=((0, 0),), goals=((0, 0), (2, 2))), "goals"),
        (dict(size=3, goals=((3, 0),)), "goals"),
        (dict(size=3, goals=((0, -1),)), "goals"),
        (dict(size=3, goals=((0, 0), (2, 2), (0, 0))), "goals"),
        (dict(size=3, goals=()), "goals"),
        (dict(size=3, goals=((0,),)), "goals"),
        (dict(size=3, start=(0, 3)), "start"),
        (dict(size=3, start=(-1, 0)), "start"),
        (dict(size=3, walls=((1, 1),)), "start"),  # a wall on the default start
        (dict(size=3, walls=((5, 5),)), "walls"),
        (dict(size=3, walls=(0, 1)), "walls"),  # one cell, not a tuple of cells
        (dict(size=3, horizon=0), "horizon"),
    ],
    ids=str,
)
def test_invalid_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Gridworld(**kwargs)
    with pytest.raises(ValueError, match=name):
        metabelief.make("gridworld", **kwargs)


def test_equal_grids_compare_and_hash_equal():
    family = Gridworld(size=4, goals=[(0, 0), [3, 3]], start=[1, 1], walls=[(2, 2)], horizon=9)
    same = Gridworld(size=4, goals=((0, 0), (3, 3)), start=(1, 1), walls=((2, 2),), horizon=9)
    assert family == same and hash(family) == hash(same)
    assert Gridworld(size=4, goals=((3, 3), (0, 0)), start=(1, 1), walls=((2, 2),), horizon=9) != family
    assert Gridworld(size=3) == Gridworld(size=3, goals=tuple(default_goals(3, (1, 1), ())))
    assert family.as_tabular() == same.as_tabular()


# ---------------------------------------------------------------------------------------------
# The conformance check


def test_check_family_passes_on_a_small_walled_grid():
    check_family(Gridworld(size=3, walls=((0, 1),), horizon=20), num_tasks=1024)


def test_distance_table_is_manhattan_on_an_open_grid_and_detours_around_walls():
    open_grid = Gridworld(size=4)
    rows, cols = np.divmod(np.arange(16), 4)
    manhattan = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    np.testing.assert_array_equal(open_grid.distance_table(), manhattan)

    walled = Gridworld(**WALLED)
    from_start = walled.distance_table()[cell_index(4, (1, 1))]
    # Counted by hand on the map above: G0 (2, 2) is 6 moves round either wall (via (0, 3) or
    # via (3, 0)), G1 (0, 3) and G2 (3, 0) are 3 moves each.
    assert from_start[cell_index(4, (2, 2))] == 6
    assert from_start[cell_index(4, (0, 3))] == 3
    assert from_start[cell_index(4, (3, 0))] == 3
    assert from_start[cell_index(4, (1, 2))] == 16  # a wall is unreachable: size * size
