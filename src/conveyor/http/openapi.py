"""The OpenAPI document, built once from the routes and the request structs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from conveyor import __version__
from conveyor.http import wire

# which struct each operation reads, by (method, path)
REQUEST_BODIES: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("POST", "/v1/queues"): wire.QueueBody,
    ("PATCH", "/v1/queues/{name}"): wire.QueuePatch,
    ("POST", "/v1/tasks"): wire.PutBody,
    ("POST", "/v1/tasks/bulk"): wire.BulkPutBody,
    ("POST", "/v1/tasks/take"): wire.TakeBody,
    ("POST", "/v1/tasks/complete"): wire.CompleteManyBody,
    ("POST", "/v1/tasks/{task_id}/complete"): wire.CompleteBody,
    ("POST", "/v1/tasks/{task_id}/fail"): wire.FailBody,
    ("POST", "/v1/tasks/{task_id}/heartbeat"): wire.HeartbeatBody,
    ("POST", "/v1/tasks/{task_id}/events"): wire.EventsBody,
    ("POST", "/v1/batches"): wire.CreateBatchBody,
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}

# bodies that are not JSON, by (method, path): their schema's name and the schema
MULTIPART_BODIES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    # the upload of the Files API; its fields must come before the file
    ("POST", "/v1/files"): (
        "FileUpload",
        {
            "type": "object",
            "properties": {
                "purpose": {
                    "type": "string",
                    "enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"],
                },
                "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
                "file": {"type": "string", "format": "binary"},
            },
            "required": ["purpose", "file"],
        },
    ),
}

QUERY_PARAMETERS = {
    ("GET", "/v1/files"): ["after", "limit", "order", "purpose"],
    ("GET", "/v1/tasks"): ["queue", "status", "after", "limit"],
    ("DELETE", "/v1/queues/{name}"): ["force"],
    ("GET", "/v1/tasks/{task_id}/events"): ["after"],
    ("GET", "/v1/batches"): ["after", "limit"],
}


def build(routes: Sequence[BaseRoute]) -> bytes:
    """The OpenAPI 3.1 document for `routes`, as JSON bytes."""
    _, components = msgspec.json.schema_components(
        list(REQUEST_BODIES.values()), ref_template="#/components/schemas/{name}"
    )
    components["Error"] = ERROR_SCHEMA
    components.update(MULTIPART_BODIES.values())
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method)
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Conveyor", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
    return msgspec.json.encode(document)


def _operation(route: Route, method: str) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in QUERY_PARAMETERS.get((method, route.path), [])
    ]
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    operation: dict[str, Any] = {
        "operationId": f"{route.name}_{method.lower()}",
        "summary": (route.endpoint.__doc__ or route.name).strip().splitlines()[0],
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
            "4XX": {"description": "A request the server refused", **error},
            "5XX": {"description": "A failure of the server or its store", **error},
        },
    }
    form = MULTIPART_BODIES.get((method, route.path))
    if form is not None:
        ref = {"$ref": f"#/components/schemas/{form[0]}"}
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": ref}},
        }
    body = REQUEST_BODIES.get((method, route.path))
    if body is not None:
        ref = {"$ref": f"#/components/schemas/{body.__name__}"}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    return operation
