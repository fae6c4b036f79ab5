"""The ``metabelief`` command line: ``run``, ``list``, ``check`` and ``bench`` (``DESCRIPTION``)."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import pathlib
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence

import jax

from metabelief import experiments, testing
from metabelief.experiments import output
from metabelief.experiments.results import Provenance
from metabelief.tasks import registry
from metabelief.train.config import with_algorithm

# The top-level help (plain text: argparse prints it as it stands).
DESCRIPTION = """\
metabelief: train recurrent meta-RL agents on task families with an exact Bayesian belief and
test whether their memory carries that belief.

  metabelief run EXPERIMENT [--quick]       train, evaluate, probe; write results.json and plots
  metabelief list                           the experiments and the task families
  metabelief check FAMILY [ARG=VALUE ...]   the conformance checks of a task family
  metabelief bench [--quick]                throughput next to gymnax and a bare LSTM
"""
# Measured on a 2-core CPU: `run bandit --quick` 63 s; every experiment's quick run together, 200 CPU-seconds.
QUICK_HELP = (
    "a smoke-test size (2 seeds, a few updates): about a minute or less on a 2-core CPU, mostly "
    "compiling; the figures mean nothing at this size"
)

# `metabelief run` flags -> TrainConfig fields they override.
_TRAIN_FLAGS = {
    "num_tasks": "num_tasks",
    "updates": "num_updates",
    "seed": "seed",
    "seeds": "num_seeds",
    "hidden": "hidden_size",
    "devices": "devices",
    "cell": "cell",
    "predictive": "predictive_coef",
    "checkpoints": "checkpoints",
}
# Config field -> the `metabelief run` flag that sets it, to name the flag when a value is rejected.
_RUN_FLAG_NAMES = {field: "--" + flag.replace("_", "-") for flag, field in _TRAIN_FLAGS.items()} | {
    "rows": "--rows",
    "algorithm": "--algorithm",  # set apart: it brings its own learning rate and updates
}


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a bad command line in one line on stderr (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def naming_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raises a ``ValueError`` that names config fields in ``flags`` led by the flags that set them.

    ``"num_updates must be >= 1, got 0"`` under ``{"num_updates": "--updates"}`` becomes
    ``"--updates: num_updates must be >= 1, got 0"``: the user sees the flag they typed.
    """
    try:
        yield
    except ValueError as error:
        names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
        found = re.findall(rf"(?<![\w.-])({names})(?!\w)", str(error))
        if not found:
            raise
        named = ", ".join(dict.fromkeys(flags[name] for name in found))  # in order, each once
        raise ValueError(f"{named}: {error}") from error


def checked_out_dir(path: pathlib.Path, flag: str = "--out") -> pathlib.Path:
    """Creates the output folder now, so a path that cannot be one fails before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{flag} {str(path)!r} cannot be an output folder: {error.strerror or error}"
        ) from error
    return path


def _parse_family_args(pairs: Sequence[str]) -> dict[str, object]:
    """``["num_arms=3", "support=(0.1, 0.9)"]`` -> ``{"num_arms": 3, "support": (0.1, 0.9)}``."""
    kwargs = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"family arguments are NAME=VALUE, got {pair!r}")
        if name in kwargs:
            raise ValueError(f"family argument {name} is given more than once")
        try:
            kwargs[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[name] = text
    return kwargs


def _list(_: argparse.Namespace) -> None:
    print("experiments (metabelief run NAME):")
    for name, (module, _) in sorted(experiments.EXPERIMENTS.items()):
        print(f"  {name:20s} {module.SUMMARY}")
    print("task families (metabelief check NAME):")
    for name in registry.families():
        summary = (registry.lookup(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:20s} {summary.replace('``', '')}")


def _run(args: argparse.Namespace) -> None:
    module, config_type = experiments.lookup(args.experiment)
    if args.rows is not None and config_type is not experiments.rl2_table.RL2TableConfig:
        raise ValueError(f"--rows applies to rl2-table, not to {args.experiment}")
    if args.updates is not None and config_type is experiments.rl2_table.RL2TableConfig:
        raise ValueError(
            "--updates does not apply to rl2-table: each row trains for its agent steps "
            "(agent_steps / (tasks x pulls) updates, at most max_updates)"
        )
    is_family = config_type is experiments.family.FamilyConfig
    is_study = config_type is experiments.study.StudyConfig
    if args.grid is not None and not is_study:
        raise ValueError(f"--grid applies to study, not to {args.experiment}")
    train_flags = [f"--{flag}" for flag in (*_TRAIN_FLAGS, "algorithm") if getattr(args, flag) is not None]
    if is_study and train_flags:
        raise ValueError(
            f"study sets its training per cell of its grid (--grid); {', '.join(train_flags)} do not apply"
        )
    if args.target and not is_family:
        raise ValueError(f"{args.experiment} takes no family; only 'run family NAME [ARG=VALUE ...]' does")
    if is_family and not args.target:
        raise ValueError(
            "run family needs a family: a registered name (metabelief list) or package.module:Class, "
            "then its ARG=VALUE arguments"
        )
    with naming_flags(_RUN_FLAG_NAMES):  # every value is checked here, before anything compiles
        if is_family:
            family_args = _parse_family_args(args.target[1:])
            config = config_type.of(args.target[0], quick=args.quick, **family_args)
        elif is_study:
            config = config_type(grid="quick" if args.quick else (args.grid or "default"))
        else:
            config = config_type.quick() if args.quick else config_type()
        overrides = {
            field: getattr(args, flag)
            for flag, field in _TRAIN_FLAGS.items()
            if getattr(args, flag) is not None
        }
        if args.algorithm is not None:  # with its own learning rate and updates, unless given
            trained_by = with_algorithm(config.train, args.algorithm, keep_updates=args.quick)
            config = dataclasses.replace(config, train=trained_by)
        if overrides:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, **overrides))
        if args.rows is not None:
            config = dataclasses.replace(config, rows=experiments.rl2_table.parse_rows(args.rows))
    if args.devices is not None and args.devices > len(jax.devices()):
        available = jax.devices()
        raise ValueError(
            f"--devices is {args.devices}, but only {len(available)} {available[0].platform} "
            f"device{'s are' if len(available) > 1 else ' is'} available"
        )
    out_dir = checked_out_dir(pathlib.Path(args.out) if args.out else output.default_out_dir(args.experiment))
    print(f"metabelief run {args.experiment}: {output.device_description()}; writing to {out_dir}")
    print(f"  {Provenance.now().describe()}")
    start = time.perf_counter()
    results = module.run(config, out_dir, progress=not args.no_progress)
    print()
    print(module.table(results))
    print(f"\ndone in {time.perf_counter() - start:.0f} s; results.json and plots in {out_dir}")


def _check(args: argparse.Namespace) -> None:
    family = registry.make(args.family, **_parse_family_args(args.family_args))
    start = time.perf_counter()
    try:
        with naming_flags({"num_tasks": "--num-tasks"}):
            report = testing.check_family(family, num_tasks=args.num_tasks)
    except testing.FamilyCheckError as error:  # the report so far, then the error (exit 1)
        if error.report is not None:
            print(error.report)
        raise
    print(report)
    print(f"in {time.perf_counter() - start:.1f} s")


def experiments_help() -> str:
    """The experiments ``run`` takes, one a line with its summary."""
    lines = [
        f"  {name:12s} {module.SUMMARY}" for name, (module, _) in sorted(experiments.EXPERIMENTS.items())
    ]
    return "experiments:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="metabelief", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run an experiment: train, evaluate, probe; write results and plots",
        description="Train a population of agents, evaluate and probe them; write results.json and "
        "plots to --out and print a table.",
        epilog=experiments_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("experiment", help="one of the experiments below")
    run.add_argument(
        "target",
        nargs="*",
        metavar="FAMILY [ARG=VALUE ...]",
        help="run family only: a registered family name (metabelief list) or package.module:Class, "
        "and its arguments",
    )
    run.add_argument("--out", help="output folder (default: runs/<experiment>-<time>)")
    run.add_argument("--num-tasks", type=int, help="tasks per training update")
    run.add_argument("--updates", type=int, help="training updates")
    run.add_argument("--seed", type=int, help="first random seed (training and held-out tasks)")
    run.add_argument("--seeds", type=int, help="independent agents trained together (default per experiment)")
    run.add_argument("--hidden", type=int, help="memory units (the readout's width)")
    run.add_argument(
        "--cell", help="memory model: lstm (default), gru, rnn, lru or oracle (an MLP on the exact belief)"
    )
    run.add_argument(
        "--algorithm",
        help="a2c (default) or ppo; another algorithm than the experiment's brings its own learning "
        "rate and updates (TrainConfig's defaults) unless --updates is given",
    )
    run.add_argument(
        "--predictive", type=float, metavar="COEF", help="weight of the next-reward prediction loss (0)"
    )
    run.add_argument(
        "--devices", type=int, help="devices to split each training update's tasks over (default 1)"
    )
    run.add_argument("--rows", help="rl2-table only: 'small', 'all' or KxN pairs like 5x10,10x100")
    run.add_argument(
        "--grid",
        help="study only: 'quick', 'default' (21 min measured on a 2-core CPU) or 'gpu' (the full grid)",
    )
    run.add_argument(
        "--checkpoints",
        type=int,
        help="about that many evaluations during training, evenly spaced (results.json: "
        "seeds[i].train.dynamics; default 11)",
    )
    run.add_argument("--quick", action="store_true", help=QUICK_HELP)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)
    # Listed for --help only: `main` hands `bench ...` to metabelief.bench.main, which has its own flags.
    commands.add_parser("bench", help="throughput next to gymnax and the bare LSTM floor (see bench --help)")
    commands.add_parser("list", help="list the experiments and task families").set_defaults(handler=_list)
    check = commands.add_parser("check", help="run the conformance checks on a registered family")
    check.add_argument("family", help="registered family name (see metabelief list)")
    check.add_argument("family_args", nargs="*", metavar="ARG=VALUE", help="family arguments")
    check.add_argument("--num-tasks", type=int, default=2048, help="tasks for the calibration check")
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metabelief`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from metabelief import bench  # noqa: PLC0415 - flax.linen and the benchmark only when asked

        return bench.main(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "run" and not any(word.startswith("-") for word in extra):
        args.target += extra  # `run family --quick tiger p_stay=0.9`: the family after a flag
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.handler(args)
    except ValueError as error:  # bad input: one line naming the argument, no traceback
        parser.exit(2, f"metabelief: error: {_one_line(error)}\n")
    except testing.FamilyCheckError as error:  # `check` ran and the family failed a check
        parser.exit(1, f"metabelief: {_one_line(error)}\n")
    return 0


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    raise SystemExit(main())
