"""Conveyor's benchmarks; run the engine benchmark with `python -m benchmarks.engines`."""
