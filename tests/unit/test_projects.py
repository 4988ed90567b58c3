"""Projects: key parsing, and one store shared by services that cannot see each other."""

from __future__ import annotations

import pytest

from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import TaskResult, TaskSpec
from conveyor.engines.engine import Completion, Settled
from conveyor.engines.memory import MemoryEngine
from conveyor.errors import InvalidInput, NotFound
from conveyor.http.auth import Principal, Role, parse_keys
from conveyor.service.projects import Namespace
from conveyor.service.tasks import TaskService


def test_keys_parse_into_principals() -> None:
    keys = parse_keys("a=acme, b=globex", "w=acme", "root")
    assert keys == {
        "a": Principal(Role.PROJECT, "acme"),
        "b": Principal(Role.PROJECT, "globex"),
        "w": Principal(Role.WORKER, "acme"),
        "root": Principal(Role.ADMIN, ""),
    }
    assert parse_keys() == {}


@pytest.mark.parametrize(
    ("api", "worker", "admin", "message"),
    [
        ("key-without-project", "", "", "key=project"),
        ("a=acme,a=globex", "", "", "unique"),
        ("a=acme", "a=acme", "", "unique"),
        ("a=not a project", "", "", "project name"),
        ("=acme", "", "", "non-empty"),
    ],
)
def test_malformed_keys_are_refused(api: str, worker: str, admin: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_keys(api, worker, admin)


def test_namespace_maps_names_both_ways() -> None:
    ns = Namespace("acme")
    assert ns.queue("mail") == "acme.mail"
    assert ns.public("acme.mail") == "mail"
    assert ns.owns("acme.mail")
    assert not ns.owns("globex.mail")
    assert not ns.owns("mail")
    open_store = Namespace()
    assert open_store.queue("mail") == "mail"
    assert open_store.owns("acme.mail")


async def test_two_projects_share_a_store_and_nothing_else() -> None:
    engine = MemoryEngine()
    await engine.open()
    acme = TaskService(engine, project="acme")
    globex = TaskService(engine, project="globex")
    await acme.register_queue(QueueConfig(name="jobs", max_attempts=7))
    task = await acme.put(TaskSpec(queue="jobs", data={"n": 1}))
    assert task.queue == "jobs"
    assert task.max_attempts == 7
    await globex.put(TaskSpec(queue="jobs", data={"n": 2}))  # globex's own queue "jobs"

    assert [q.name for q in await acme.list_queues()] == ["jobs"]
    assert (await globex.queue_stats("jobs")).queue.max_attempts == 3
    with pytest.raises(NotFound):
        await globex.get_task(task.task_id)
    with pytest.raises(NotFound):
        await globex.cancel(task.task_id)

    (taken,) = await acme.take(["jobs"], size=10)
    assert taken.task_id == task.task_id
    assert taken.queue == "jobs"
    assert taken.lease_id is not None
    (outcome,) = await acme.complete_many([Completion(taken.task_id, taken.lease_id, TaskResult())])
    assert outcome == Settled("jobs", outcome.status)  # type: ignore[union-attr]
    assert [t.data for t in (await globex.list_tasks("jobs")).tasks] == [{"n": 2}]
    # stored names stay out of reach: a dot is never a valid queue name
    with pytest.raises(InvalidInput):
        await globex.put(TaskSpec(queue="acme.jobs"))
    names = sorted(s.queue.name for s in await TaskService(engine).store_stats())
    assert names == ["acme.jobs", "globex.jobs"]
