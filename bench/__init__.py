"""Benchmark suite of pushservice: a load generator, two baselines and a runner.

Run everything with ``python -m bench.run --all --write-docs``; see docs/benchmarks.md.
"""
