"""API keys: who is calling, for which project, and what they may do.

`CONVEYOR_API_KEYS` (`key=project,…`) may do everything within their project;
`CONVEYOR_WORKER_KEYS` (`key=project,…`) may take, complete, fail, heartbeat and send
events, nothing else; `CONVEYOR_ADMIN_KEYS` (`key,…`) may do everything, for the project
named by an `X-Conveyor-Project` header (none: the store without a project), and read
/metrics. With no key configured the server serves loopback only and asks for none.
"""

from __future__ import annotations

import hmac
import re
from enum import StrEnum
from typing import NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.errors import InvalidInput
from conveyor.http.errors import error_body
from conveyor.service.projects import validate_project


class Role(StrEnum):
    PROJECT = "project"
    WORKER = "worker"
    ADMIN = "admin"


class Principal(NamedTuple):
    role: Role
    project: str


# what a worker key may call: the worker protocol and its Bella-Queue form
WORKER_ROUTES = re.compile(
    r"/v1/tasks/(take|complete)|/v1/tasks/[^/]+/(complete|fail|heartbeat|events)"
    r"|/v1/queue/take|/v1/queue/[^/]+/complete"
)
OPEN_PATHS = frozenset({"/livez", "/readyz", "/actuator/health", "/openapi.json"})


def parse_keys(api: str = "", worker: str = "", admin: str = "") -> dict[str, Principal]:
    """The keys of the three settings; InvalidInput names the setting that is malformed."""
    keys: dict[str, Principal] = {}

    def add(key: str, principal: Principal, setting: str) -> None:
        if not key or key in keys:
            raise InvalidInput(f"{setting}: every key must be non-empty and unique", param=setting)
        keys[key] = principal

    for setting, text, role in (
        ("api_keys", api, Role.PROJECT),
        ("worker_keys", worker, Role.WORKER),
    ):
        for entry in filter(None, (part.strip() for part in text.split(","))):
            key, sep, project = entry.partition("=")
            if not sep:
                raise InvalidInput(f"{setting}: write each key as key=project", param=setting)
            add(key.strip(), Principal(role, validate_project(project.strip())), setting)
    for entry in filter(None, (part.strip() for part in admin.split(","))):
        add(entry, Principal(Role.ADMIN, ""), "admin_keys")
    return keys


class AuthMiddleware:
    """Checks the Bearer key of every API request and records who is calling."""

    def __init__(self, app: ASGIApp, keys: dict[str, Principal]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        principal = self._principal(headers.get(b"authorization", b""))
        if principal is None:
            await _refuse(
                send,
                401,
                "Incorrect or missing API key: send Authorization: Bearer <key>",
                "invalid_request_error",
                "invalid_api_key",
            )
            return
        path = scope["path"]
        if principal.role is Role.WORKER and not WORKER_ROUTES.fullmatch(path):
            await _refuse(
                send,
                403,
                "a worker key may take, complete, fail, heartbeat and send events only",
                "permission_error",
                "forbidden",
            )
            return
        if path == "/metrics" and principal.role is not Role.ADMIN:
            await _refuse(send, 403, "metrics need an admin key", "permission_error", "forbidden")
            return
        if principal.role is Role.ADMIN:
            project = headers.get(b"x-conveyor-project", b"").decode("latin-1")
            try:
                principal = Principal(Role.ADMIN, validate_project(project) if project else "")
            except InvalidInput as exc:
                await _refuse(send, 400, exc.message, "invalid_request_error", None)
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _principal(self, header: bytes) -> Principal | None:
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        for key, principal in self.keys.items():  # compare all, in constant time
            if hmac.compare_digest(key.encode(), token.strip().encode()):
                return principal
        return None


async def _refuse(send: Send, status: int, message: str, kind: str, code: str | None) -> None:
    body = error_body(message, kind, code=code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
