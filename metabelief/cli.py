"""The ``metabelief`` command line: ``metabelief list`` and ``metabelief check NAME [ARG=VALUE ...]``."""

from __future__ import annotations

import argparse
import ast
import time
from collections.abc import Sequence

from metabelief import testing
from metabelief.tasks import registry


def _parse_family_args(pairs: Sequence[str]) -> dict[str, object]:
    """``["num_arms=3", "support=(0.1, 0.9)"]`` -> ``{"num_arms": 3, "support": (0.1, 0.9)}``."""
    kwargs = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"family arguments are NAME=VALUE, got {pair!r}")
        try:
            kwargs[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[name] = text
    return kwargs


def _list(_: argparse.Namespace) -> None:
    for name in registry.families():
        summary = (registry.lookup(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:20s} {summary}")


def _check(args: argparse.Namespace) -> None:
    family = registry.make(args.family, **_parse_family_args(args.family_args))
    start = time.perf_counter()
    report = testing.check_family(family, num_tasks=args.num_tasks)
    print(
        f"{family!r}: passed in {time.perf_counter() - start:.1f}s; calibration over "
        f"{report.calibration_groups} groups, max |z| {report.calibration_max_z:.2f} "
        f"(threshold {report.z_threshold:.2f})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metabelief", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the registered task families").set_defaults(handler=_list)
    check = commands.add_parser("check", help="run the conformance checks on a registered family")
    check.add_argument("family", help="registered family name (see `metabelief list`)")
    check.add_argument("family_args", nargs="*", metavar="ARG=VALUE", help="family arguments")
    check.add_argument("--num-tasks", type=int, default=2048, help="tasks for the calibration check")
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metabelief`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:
        parser.exit(2, f"metabelief: error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
