"""The client side of the `conveyor` command: `queue`, `task` and `worker` (see `conveyor.cli`)."""
