"""Conveyor: a task queue engine for AI workloads."""
