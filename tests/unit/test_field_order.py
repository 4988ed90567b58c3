"""Hot paths build Task and NewTask positionally; this pins the field order they rely on."""

from __future__ import annotations

from conveyor.domain.tasks import NewTask, Task

TASK_FIELDS = (
    "task_id",
    "queue",
    "level",
    "endpoint",
    "data",
    "status",
    "response_mode",
    "callback_url",
    "timeout_s",
    "custom_id",
    "batch_id",
    "group",
    "metadata",
    "attempts",
    "max_attempts",
    "backoff",
    "run_at",
    "created_at",
    "started_at",
    "completed_at",
    "expires_at",
    "result",
    "error",
    "lease_id",
    "worker_id",
    "lease_expires_at",
    "cancel_requested",
)

NEW_TASK_FIELDS = (
    "task_id",
    "queue",
    "level",
    "endpoint",
    "data_json",
    "status",
    "response_mode",
    "callback_url",
    "timeout_s",
    "custom_id",
    "batch_id",
    "group",
    "metadata_json",
    "max_attempts",
    "backoff",
    "run_at",
    "created_at",
    "expires_at",
    "fingerprint",
)


def test_task_field_order() -> None:
    assert Task.__struct_fields__ == TASK_FIELDS


def test_new_task_field_order() -> None:
    assert NewTask.__struct_fields__ == NEW_TASK_FIELDS
