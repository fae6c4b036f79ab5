"""The `metabelief` console script."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from metabelief import cli, experiments, probes, train
from metabelief.analysis import state_machine
from metabelief.experiments import interval_rules, protocol
from metabelief.experiments.probing import NetworkProbe, split_sizes
from metabelief.experiments.results import ExperimentResults, Provenance, RunResults
from metabelief.rollout import probe_moments, rollout

# A key built from a name and a prefix or suffix (``mlp_trained``, ``reverse_untrained``, ``k5``).
BUILT_KEY = re.compile(r"^(mlp|reverse)_|^k\d+$")


@pytest.fixture
def typed_results(monkeypatch):
    """The typed results each ``run`` the CLI calls returns, in order."""
    returned = []
    for module, _ in experiments.EXPERIMENTS.values():

        def recording(*args, _run=module.run, **kwargs):
            returned.append(_run(*args, **kwargs))
            return returned[-1]

        monkeypatch.setattr(module, "run", recording)
    return returned


def keys(node: object) -> set[str]:
    """Every key of a JSON tree."""
    if isinstance(node, dict):
        return set(node).union(*(keys(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(keys(value) for value in node))
    return set()


def check_results(out_dir: pathlib.Path, typed: list, networks=("trained", "untrained")) -> dict:
    """``results.json`` is the typed results' ``to_dict()`` through ``json.dumps``, its summary the
    intervals over its seed entries, and no key in it is built from a name; returns it."""
    results = json.loads((out_dir / "results.json").read_text())
    (returned,) = typed
    assert isinstance(returned, RunResults)
    assert json.loads(json.dumps(returned.to_dict(), allow_nan=False)) == results
    assert results["summary"] == interval_rules.summarize(
        [{key: value for key, value in entry.items() if key != "seed"} for entry in results["seeds"]]
    )
    figures = {key: value for key, value in results.items() if key != "config"}  # not settings (mlp_steps)
    assert not {key for key in keys(figures) if BUILT_KEY.search(key)}
    for probe in [entry["probe"] for entry in results["seeds"] if "probe" in entry] + (
        [results["summary"]["probe"]] if "probe" in results["summary"] else []
    ):
        assert set(probe) == {"split_sizes", "networks", "controls"}
        assert set(probe["networks"]) == set(networks)  # exactly the network names
        for network in probe["networks"].values():
            assert list(network) == [field.name for field in dataclasses.fields(NetworkProbe)]
    return results


def test_list_prints_every_experiment_and_family(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert (
        "bandit " in out and "gridworld " in out and "bernoulli_bandit" in out and "dependent_bandit" in out
    )


def test_run_bandit_quick_writes_results_plots_and_agent(tmp_path, capsys, typed_results):
    out_dir = tmp_path / "run"
    argv = ["run", "bandit", "--quick", "--no-progress", "--out", str(out_dir), "--seed", "3", "--seeds", "3"]
    assert cli.main(argv) == 0
    results = check_results(out_dir, typed_results)
    assert isinstance(typed_results[0], ExperimentResults)
    assert results["experiment"] == "bandit" and results["config"]["train"]["seed"] == 3
    assert {"seconds", "agent_steps_per_second", "num_seeds"} <= set(results["train"])
    assert results["config"]["train"]["num_seeds"] == results["train"]["num_seeds"] == 3
    # One entry per seed, keyed by its seed, with the keys a one-seed run writes.
    assert [entry["seed"] for entry in results["seeds"]] == [3, 4, 5]
    for entry in results["seeds"]:
        assert set(entry["return"]) == {"agent", "random", "thompson", "bayes_optimal"}
        for network in ("trained", "untrained"):
            for histories in ("agent", "bayes"):
                simulation = entry["state_machine"][network][histories]
                assert simulation["gamma"] == {"undiscounted": 1.0, "training_gamma": 0.9}
                for direction in ("agent_to_bayes", "bayes_to_agent"):
                    for kind in ("linear", "mlp"):
                        assert set(simulation[direction][kind]) == set(state_machine.MEASURES)
            curve = entry["intervention"][network]
            for push in curve["pushes"].values():
                assert len(push["log_odds"][0]) == len(curve["deltas"])
            # The DP pulls an arm more as its posterior mean grows.
            assert curve["reference_slopes"]["bayes_optimal"] > 0
            update = entry["counterfactual"][network]
            assert len(update["outcomes"]) == len(update["slope"]) == len(update["r2"]) == 4  # arm x reward
        for network in entry["probe"]["networks"].values():
            for probe in ("linear", "posterior_mean", "reverse", "mlp"):
                assert {"r2", "r2_per_dim", "mse"} <= set(network[probe])
            for probe in ("linear", "posterior_mean", "reverse"):
                assert -1.0 < network[probe]["r2"] <= 1.0
            assert len(network["r2_by_time"]) == results["config"]["train"]["family_args"]["horizon"]
        assert (
            len(entry["probe"]["networks"]["trained"]["linear"]["r2_per_dim"]) == 4
        )  # means, stds of 2 arms
        controls = entry["probe"]["controls"]
        assert [baseline["lags"] for baseline in controls["input_only"]] == [1, 5]
        assert (
            len(controls["per_dimension"]["untrained"])
            == len(controls["input_only"][-1]["per_dimension"])
            == 4
        )
        assert set(controls["within_time"]) == {"trained", "untrained", "input_only"}
        # The exact posterior mean is the best predictor of the truth: no probe beats it by much.
        truth = controls["truth"]
        assert truth["bayes_minimum"] < truth["prior"]
        assert min(truth["mse"].values()) > 0.9 * truth["bayes_minimum"]
    # Distinct agents: different initialisations give different untrained probes.
    assert len({entry["probe"]["networks"]["untrained"]["linear"]["r2"] for entry in results["seeds"]}) == 3
    # Each entry is its own seed's: agent i, loaded alone, earns that entry's return on the
    # experiment's held-out tasks with the experiment's keys.
    config = train.TrainConfig.from_dict(results["config"]["train"])
    family, agent = config.make_family(), config.make_agent()
    task_key, agent_key, *_ = jax.random.split(protocol.held_out_key(config), 6)
    tasks = jax.vmap(family.sample_task)(jax.random.split(task_key, results["config"]["eval_tasks"]))
    for index, entry in enumerate(results["seeds"]):
        params, seed_config = train.load_agent(out_dir / "agent", seed=index)
        assert seed_config.seed == entry["seed"]
        played = rollout(family, agent, params, agent_key, tasks)
        assert float(played.rewards.sum(axis=0).mean()) == pytest.approx(entry["return"]["agent"], abs=0.05)
        # ... and its probes were fitted on its own histories.
        moments = probe_moments(family, agent, params, split_sizes(len(played.actions[0])), history=played)
        hidden, features = slice(0, agent.hidden_size), slice(agent.hidden_size, agent.hidden_size + 4)
        r2 = float(probes.linear_probe(moments, hidden, features).test.r2)
        assert r2 == pytest.approx(entry["probe"]["networks"]["trained"]["linear"]["r2"], abs=2e-3)
    # The summary holds the mean over seeds of every figure, the references' identical across seeds.
    summary = results["summary"]
    agent_returns = [entry["return"]["agent"] for entry in results["seeds"]]
    assert summary["return"]["agent"]["mean"] == pytest.approx(sum(agent_returns) / 3)
    assert (
        summary["return"]["agent"]["low"]
        < summary["return"]["agent"]["mean"]
        < summary["return"]["agent"]["high"]
    )
    assert summary["return"]["random"]["low"] == pytest.approx(summary["return"]["random"]["high"])
    r2 = [entry["probe"]["networks"]["trained"]["linear"]["r2_per_dim"][1] for entry in results["seeds"]]
    assert summary["probe"]["networks"]["trained"]["linear"]["r2_per_dim"][1]["mean"] == pytest.approx(
        sum(r2) / 3
    )
    for plot in ("learning_curve.png", "decoded_belief.png", "probe_r2_by_time.png", "intervention.png"):
        assert (out_dir / plot).read_bytes().startswith(b"\x89PNG")
    assert (out_dir / "agent" / "config.json").exists()
    out = capsys.readouterr().out
    assert "hidden → posterior means (linear)" in out and "thompson" in out and "3 seeds" in out
    # Which code ran: printed at the start and written beside the device.
    assert Provenance.now().describe() in out
    assert results["provenance"] == Provenance.now().to_dict()


def test_check_runs_the_conformance_checks(capsys):
    assert (
        cli.main(["check", "dependent_bandit", "support=(0.2, 0.8)", "horizon=20", "--num-tasks", "512"]) == 0
    )
    out = capsys.readouterr().out
    assert "check_family(DiscreteDependentBandit(horizon=20, support=(0.2, 0.8))): passed every check" in out
    capabilities = "DependentArms (check 9), ExpectedRewards (check 9), BeliefVariance (check 8)"
    assert f"capabilities declared: {capabilities}" in out
    assert re.search(
        r"7\. calibration of the posterior mean +passed: \d+ groups, max \|z\| [\d.]+ < [\d.]+", out
    )
    assert re.search(
        r"8\. calibration of the second moment +passed: \d+ groups, .*belief_variance for 2 of 2", out
    )
    assert re.search(r"9\. declared capabilities +passed: DependentArms, ExpectedRewards\n", out)
    assert len(re.findall(r"^  \d\. .+ passed", out, flags=re.MULTILINE)) == 9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "no_such_family"], "unknown family name 'no_such_family'"),
        (["check", "bernoulli_bandit", "num_arms=1"], "num_arms must be >= 2"),
        (["check", "bernoulli_bandit", "num_arms"], "NAME=VALUE"),
        (["run", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
        (["run", "bandit", "--num-tasks", "0"], "num_tasks must be >= 1"),
    ],
)
def test_bad_input_exits_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def help_text(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_names_every_command_and_experiment_in_plain_text(capsys):
    top = help_text([], capsys)
    for command in ("run EXPERIMENT", "list", "check FAMILY", "bench"):
        assert f"metabelief {command}" in top
    run = help_text(["run"], capsys)
    listed = re.findall(r"^  (\S+) +\S", run.split("experiments:\n")[1], flags=re.MULTILINE)
    assert listed == sorted(experiments.EXPERIMENTS)
    assert "2-core CPU" in run and "seconds" not in run  # measured; not "a seconds-long smoke test"
    bench = help_text(["bench"], capsys)
    assert "2-core CPU" in bench
    for text in (top, run, bench):
        assert "`" not in text


def test_installed_console_script_runs():
    script = pathlib.Path(sys.executable).parent / "metabelief"  # installed beside the interpreter
    result = subprocess.run([str(script), "list"], capture_output=True, text=True, check=True)
    assert "bernoulli_bandit" in result.stdout


def test_run_gridworld_quick_writes_results_and_the_goal_belief_plot(tmp_path, capsys, typed_results):
    out_dir = tmp_path / "run"
    assert cli.main(["run", "gridworld", "--quick", "--no-progress", "--out", str(out_dir)]) == 0
    results = check_results(out_dir, typed_results)
    assert results["experiment"] == "gridworld" and len(results["seeds"]) == 2
    for entry in results["seeds"]:
        assert set(entry["return"]) == {"agent", "random", "belief_greedy"}
        assert entry["return"]["belief_greedy"] > 5 * entry["return"]["random"]
        assert (
            len(entry["probe"]["networks"]["trained"]["linear"]["r2_per_dim"]) == 24
        )  # one per candidate goal
        assert len(entry["probe"]["controls"]["per_dimension"]["trained"]) == 24
    for plot in ("learning_curve.png", "goal_belief.png", "probe_r2_by_time.png"):
        assert (out_dir / plot).read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    assert "belief-greedy explorer" in out and "each feature apart" in out


def test_run_two_step_quick_writes_stay_probabilities_for_every_agent(tmp_path, capsys, typed_results):
    out_dir = tmp_path / "run"
    assert cli.main(["run", "two-step", "--quick", "--no-progress", "--out", str(out_dir)]) == 0
    results = check_results(out_dir, typed_results)
    assert results["experiment"] == "two-step" and len(results["seeds"]) == 2
    agents = {"agent", "belief_greedy", "model_free", "random"}
    for entry in results["seeds"]:
        assert set(entry["reward_per_trial"]) == set(entry["stay"]) == agents
        # The reference agents' signatures hold at any training size: the belief-greedy agent's
        # interaction (about 0.68 at the defaults), the last-outcome Q-learner's main effect of reward.
        assert entry["stay"]["belief_greedy"]["model_based_index"] > 0.5
        assert abs(entry["stay"]["model_free"]["model_based_index"]) < 0.15
        assert entry["stay"]["model_free"]["model_free_index"] > 0.5
        assert len(entry["probe"]["networks"]["trained"]["linear"]["r2_per_dim"]) == 1  # P(A rich)
        # The push minimal in the activity's metric moves the decoded P(A rich) by exactly δ.
        pushed = entry["intervention"]["trained"]["pushes"]["minimum_mahalanobis"]
        assert abs(pushed["decoded_per_unit"] - 1.0) < 1e-4
    for plot in (
        "learning_curve.png",
        "stay_probabilities.png",
        "decoded_belief.png",
        "probe_r2_by_time.png",
        "intervention.png",
    ):
        assert (out_dir / plot).read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    assert "MB index" in out and "causal / observational" in out


def test_run_failure_quick_reports_every_test_condition(tmp_path, capsys, typed_results):
    out_dir = tmp_path / "run"
    assert cli.main(["run", "failure", "--quick", "--no-progress", "--out", str(out_dir)]) == 0
    results = check_results(out_dir, typed_results)
    assert len(results["seeds"]) == 2
    assert set(results["summary"]["conditions"]) == set(results["seeds"][1]["conditions"])
    conditions = results["seeds"][0]["conditions"]
    names = ["in distribution", "support (0.4, 0.6)", "support (0.1, 0.5)", "p ~ U[0, 1]", "past the horizon"]
    assert list(conditions) == names
    for condition in conditions.values():
        # The Bayes-optimal agent of the test prior earns at least what any agent does, on average.
        assert condition["gap"] > -4 * condition["gap_se"]
        assert list(condition["states"]) == [
            "agent",
            "untrained",
            "counts",
            "training posterior",
            "test posterior",
            "training log-odds",
        ]
        for state in condition["states"].values():
            assert set(state["r2_posterior_mean"]) == {"training prior", "test prior"}
            assert set(state["readout"]["rmse"]) == {"training prior", "test prior"}
            assert len(state["readout"]["rmse_by_time"]["test prior"]) == condition["steps"]
        # The hypothesis controls score what they embody: the counts act on the majority, each
        # posterior on itself.
        controls = condition["states"]
        if controls["counts"]["follows_posterior_not_majority"]["steps"]:
            assert controls["counts"]["follows_posterior_not_majority"]["probability"] == 0.0
        assert controls["training posterior"]["follows_posterior_not_majority"]["probability"] in (1.0, None)
        assert controls["training posterior"]["follows_training_prior"]["probability"] in (1.0, None)
        assert controls["test posterior"]["follows_training_prior"]["probability"] in (0.0, None)
    # The posteriors of the training prior and of a symmetric test prior disagree; in distribution never.
    assert conditions["support (0.4, 0.6)"]["disagreement"]["training_vs_test"] > 0
    assert conditions["in distribution"]["disagreement"]["training_vs_test"] == 0
    assert conditions["in distribution"]["states"]["agent"]["follows_training_prior"]["steps"] == 0
    assert conditions["past the horizon"]["steps"] == 2 * conditions["in distribution"]["steps"]
    assert isinstance(results["verdicts"], list)
    exclusion = results["exclusion"]
    assert exclusion["num_excluded"] + exclusion["num_included"] == 2
    assert exclusion["excluded_seeds"] == [
        s["seed"] for s in results["seeds"] if not s["learning"]["included"]
    ]
    for condition in conditions.values():
        assert set(condition["choices"]["per_choice"]) == {*condition["states"]} - {"agent", "untrained"} | {
            "agent policy"
        }
    assert (out_dir / "failure.png").read_bytes().startswith(b"\x89PNG")
    assert "verdicts per seed, only between hypotheses a measure separates" in capsys.readouterr().out


def test_run_rl2_table_quick_prints_every_policy(tmp_path, capsys, typed_results):
    out_dir = tmp_path / "run"
    assert cli.main(["run", "rl2-table", "--quick", "--no-progress", "--out", str(out_dir)]) == 0
    results = check_results(out_dir, typed_results)
    assert len(results["seeds"]) == 2
    (row,) = results["seeds"][1]["rows"]
    assert (row["arms"], row["pulls"]) == (5, 10)
    expected = {"lstm", "random", "gittins", "thompson", "ucb1", "epsilon_greedy", "greedy", "bayes_optimal"}
    assert set(row["return"]) == expected | {"posterior_greedy"}
    assert row["published"]["rl2"] == 6.7  # Duan et al. (2016), Table 1, k = 5, n = 10
    # Random play earns n / 2 in expectation; the index policies do better.
    assert abs(row["return"]["random"] - 5.0) < 5 * row["return_se"]["random"]
    assert row["return"]["gittins"] > row["return"]["random"] + 3 * row["return_se"]["gittins"]
    printed = capsys.readouterr().out
    assert "LSTM / Gittins" in printed and "our LSTM / RL²" in printed and "arXiv:1611.02779" in printed


def test_published_rl2_table_is_transcribed_consistently():
    from metabelief.experiments.rl2_table import PUBLISHED, ROWS, published

    assert set(PUBLISHED) == set(ROWS["all"])
    for arms, pulls in PUBLISHED:
        values = published(arms, pulls)
        # Random play earns n / 2 in expectation; every other policy in the paper beats it.
        assert abs(values["random"] - pulls / 2) <= 0.01 * pulls
        assert min(v for name, v in values.items() if name != "random") > values["random"]
    assert published(3, 20) is None


def test_rows_flag_parses_and_only_applies_to_the_rl2_table():
    from metabelief.experiments.rl2_table import parse_rows

    assert parse_rows("5x10, 10x100") == ((5, 10), (10, 100))
    assert len(parse_rows("all")) == 9
    with pytest.raises(ValueError, match="KxN"):
        parse_rows("5by10")
    with pytest.raises(SystemExit):
        cli.main(["run", "bandit", "--rows", "small"])
