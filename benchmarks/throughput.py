"""Throughput next to gymnax and the bare LSTM floor; the same as ``metabelief bench``.

Usage: ``python benchmarks/throughput.py [--quick] [--sizes N ...] [--out runs/bench]``. See
``metabelief.bench`` for what is measured.
"""

from metabelief.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
