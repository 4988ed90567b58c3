"""The engine benchmark: queue verbs through TaskService, per engine, on a fresh store each.

    python -m benchmarks.engines [--engines memory,sqlite] [--quick] [--output FILE]

See benchmarks/README.md for what each figure means and every option.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import NamedTuple

from benchmarks._report import Progress, Row, filesystem, markdown, note, percentile, rate
from conveyor.domain.queues import QueueConfig
from conveyor.domain.tasks import Task, TaskResult, TaskSpec
from conveyor.engines import create_engine
from conveyor.engines.engine import Completion
from conveyor.errors import ConveyorError
from conveyor.service.tasks import TaskService

ALIASES = {"memory": "memory://", "sqlite": "sqlite:///{dir}/bench.db"}
SCENARIOS = ("bulk", "single", "take1", "take100", "latency")
RESULT = TaskResult(status_code=200, body={"ok": True})
WARMUP = 50
SETTLE_S = 3.0


@dataclass(frozen=True)
class Settings:
    """How much work each scenario does; `--quick` divides the defaults by ten."""

    tasks: int = 100_000  # bulk put: tasks in all
    batch: int = 1_000  # bulk put (and every prefill): tasks per put_many
    ops: int = 20_000  # single put: puts in all
    producers: int = 16  # single put: concurrent producers
    drain: int = 50_000  # take+complete: tasks queued before the clock starts
    workers: int = 16  # take+complete size=1: concurrent workers
    batch_workers: int = 4  # take+complete size=N: concurrent workers
    take_size: int = 100  # take+complete size=N: tasks per take
    depth: int = 1_000  # latency: the small queue
    big: int = 1_000_000  # latency: the big queue
    samples: int = 2_000  # latency: timed take+complete pairs per queue depth


QUICK_DIVISOR = 10
SCALED = ("tasks", "ops", "drain", "big", "samples")


class Target(NamedTuple):
    """An engine to measure: a label for the table and its URL (`{dir}`: a fresh temp dir)."""

    label: str
    url: str


class Store(NamedTuple):
    """A fresh store behind a TaskService, and the queue the scenario uses."""

    service: TaskService
    queue: str


def parse_targets(text: str) -> list[Target]:
    """`memory`, `sqlite` or engine URLs, comma-separated."""
    targets = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            targets.append(Target(item, ALIASES.get(item, item)))
    if not targets:
        raise SystemExit("--engines names no engine")
    return targets


@asynccontextmanager
async def fresh_store(target: Target, scenario: str, tmpdir: str | None) -> AsyncIterator[Store]:
    """An opened engine on a store no scenario used before, closed and removed afterwards.

    A URL with `{dir}` gets a new temporary directory; any other URL (a server) gets a
    queue of its own, obliterated at the end.
    """
    fresh_dir = "{dir}" in target.url
    tmp = tempfile.mkdtemp(prefix="conveyor-bench-", dir=tmpdir) if fresh_dir else None
    url = target.url if tmp is None else target.url.replace("{dir}", tmp)
    private = tmp is not None or url.startswith("memory:")  # a store no one else sees
    queue = "bench" if private else f"bench-{scenario}-{secrets.token_hex(4)}"
    try:
        engine = create_engine(url)
        await engine.open()
        try:
            service = TaskService(engine)
            await service.register_queue(QueueConfig(name=queue))
            yield Store(service, queue)
            if not private:
                await service.obliterate_queue(queue, force=True)
        finally:
            await engine.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def specs(queue: str, count: int) -> list[TaskSpec]:
    """`count` small tasks of the kind a producer sends (ids minted by the service)."""
    return [
        TaskSpec(queue=queue, endpoint="/v1/echo", data={"prompt": "benchmark", "n": n})
        for n in range(count)
    ]


async def fill(store: Store, count: int, batch: int, label: str) -> None:
    """Queue `count` tasks with bulk puts of `batch` (untimed set-up)."""
    batch_specs = specs(store.queue, batch)
    progress = Progress(label, count) if count >= 100_000 else None
    done = 0
    while done < count:
        size = min(batch, count - done)
        await store.service.put_many(batch_specs[:size])
        done += size
        if progress is not None:
            progress.update(done)
    if progress is not None:
        progress.finish(done)


async def complete_all(service: TaskService, tasks: Sequence[Task]) -> None:
    """Complete `tasks`: one complete, or one batched complete_many as a busy worker sends."""
    if len(tasks) == 1:
        task = tasks[0]
        assert task.lease_id is not None, "a taken task carries its lease"
        await service.complete(task.task_id, task.lease_id, RESULT)
        return
    items = [Completion(t.task_id, t.lease_id or "", RESULT) for t in tasks]
    settled = await service.complete_many(items)
    refused = [outcome for outcome in settled if isinstance(outcome, ConveyorError)]
    if refused:
        raise RuntimeError(f"{len(refused)} completes refused, first: {refused[0]}")


# ---- scenarios: each returns its figures ----


async def bulk_put(store: Store, s: Settings) -> float:
    """One producer putting `tasks` tasks with put_many of `batch`: tasks/s."""
    batch_specs = specs(store.queue, s.batch)
    progress = Progress("bulk put", s.tasks)
    gc.collect()
    start = time.perf_counter()
    done = 0
    while done < s.tasks:
        size = min(s.batch, s.tasks - done)
        await store.service.put_many(batch_specs[:size])
        done += size
        progress.update(done)
    elapsed = time.perf_counter() - start
    progress.finish(done)
    return rate(done, elapsed)


async def single_put(store: Store, s: Settings) -> float:
    """`producers` concurrent producers, each calling put in a loop: puts/s."""
    spec = specs(store.queue, 1)[0]
    shares = [s.ops // s.producers + (i < s.ops % s.producers) for i in range(s.producers)]
    progress = Progress("single put", s.ops)
    done = 0

    async def producer(count: int) -> None:
        nonlocal done
        for _ in range(count):
            await store.service.put(spec)
            done += 1
            progress.update(done)

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(producer(count) for count in shares))
    elapsed = time.perf_counter() - start
    progress.finish(done)
    return rate(done, elapsed)


async def take_complete(store: Store, s: Settings, size: int, workers: int) -> float:
    """`workers` concurrent workers draining `drain` queued tasks, `size` per take: tasks/s."""
    await fill(store, s.drain, s.batch, "prefill")
    service, queues = store.service, [store.queue]
    progress = Progress(f"take+complete size={size}", s.drain)
    done = 0

    async def worker(index: int) -> None:
        nonlocal done
        while tasks := await service.take(queues, size=size, worker_id=f"bench-{index}"):
            await complete_all(service, tasks)
            done += len(tasks)
            progress.update(done)

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    elapsed = time.perf_counter() - start
    progress.finish(done)
    if done != s.drain:
        raise RuntimeError(f"completed {done:,} tasks of {s.drain:,} queued")
    return rate(done, elapsed)


class Latency(NamedTuple):
    """Sorted per-call times in ms: take alone, and take then complete."""

    take: list[float]
    take_complete: list[float]


async def latency(store: Store, s: Settings, depth: int) -> Latency:
    """One worker, one task at a time, with `depth` tasks kept queued: per-call times."""
    await fill(store, depth, s.batch, f"fill {depth:,}")
    # Steady state, not the aftermath of the fill: let background work (SQLite's
    # checkpoint of the fill's WAL) finish before the clock starts.
    await asyncio.sleep(SETTLE_S)
    service, queues = store.service, [store.queue]
    refill = specs(store.queue, 1)[0]
    takes: list[float] = []
    pairs: list[float] = []
    gc.collect()
    for i in range(WARMUP + s.samples):
        start = time.perf_counter()
        tasks = await service.take(queues, size=1)
        taken = time.perf_counter()
        if len(tasks) != 1:
            raise RuntimeError(f"take found {len(tasks)} tasks in a queue of {depth:,}")
        await complete_all(service, tasks)
        end = time.perf_counter()
        await service.put(refill)  # untimed: the depth stays at `depth`
        if i >= WARMUP:
            takes.append((taken - start) * 1000)
            pairs.append((end - start) * 1000)
    return Latency(sorted(takes), sorted(pairs))


# ---- running ----


@dataclass(frozen=True)
class Options:
    """One benchmark run: what to measure, how much, and where to put the files."""

    targets: list[Target]
    settings: Settings
    scenarios: list[str]
    output: str | None
    tmpdir: str | None


async def run_engine(target: Target, o: Options, rows: list[Row]) -> None:
    """Every chosen scenario on `target`, each on a fresh store; figures go into `rows`."""
    s, chosen = o.settings, o.scenarios

    def store(scenario: str) -> AbstractAsyncContextManager[Store]:
        note(f"[{target.label}] {scenario}")
        return fresh_store(target, scenario, o.tmpdir)

    def add(scenario: str, figure: float, unit: str) -> None:
        rows.append(Row(target.label, scenario, figure, unit))
        note(f"{target.label} | {scenario}: {figure:,.3f} {unit}")

    if "bulk" in chosen:
        async with store("bulk") as fresh:
            figure = await bulk_put(fresh, s)
        add(f"bulk put: put_many of {s.batch:,}, {s.tasks:,} tasks, 1 producer", figure, "tasks/s")
    if "single" in chosen:
        async with store("single") as fresh:
            figure = await single_put(fresh, s)
        add(f"single put: {s.producers} concurrent producers, {s.ops:,} puts", figure, "ops/s")
    if "take1" in chosen:
        async with store("take1") as fresh:
            figure = await take_complete(fresh, s, 1, s.workers)
        add(f"take+complete size=1: {s.workers} workers, {s.drain:,} queued", figure, "tasks/s")
    if "take100" in chosen:
        n = s.take_size
        async with store("take100") as fresh:
            figure = await take_complete(fresh, s, n, s.batch_workers)
        scenario = (
            f"take+complete size={n}: {s.batch_workers} workers,"
            f" one complete_many per take, {s.drain:,} queued"
        )
        add(scenario, figure, "tasks/s")
    if "latency" in chosen:
        results: list[Latency] = []
        for depth in (s.depth, s.big):
            async with store(f"latency{depth}") as fresh:
                result = await latency(fresh, s, depth)
            results.append(result)
            pairs, takes = result.take_complete, result.take
            add(f"take+complete p50, {depth:,} queued", percentile(pairs, 50), "ms")
            add(f"take+complete p99, {depth:,} queued", percentile(pairs, 99), "ms")
            add(f"take alone p50, {depth:,} queued", percentile(takes, 50), "ms")
        small, big = (result.take_complete for result in results)
        for q in (50, 99):
            ratio = percentile(big, q) / percentile(small, q)
            add(f"take+complete p{q} ratio, {s.big:,} / {s.depth:,} queued", ratio, "x")


async def run(o: Options, rows: list[Row]) -> list[str]:
    """Every target in turn; returns the engines that failed (the others still run)."""
    failed: list[str] = []
    for target in o.targets:
        try:
            await run_engine(target, o, rows)
        except Exception as exc:
            traceback.print_exc()
            note(f"[{target.label}] failed: {exc!r}")
            failed.append(target.label)
    return failed


def parse_args(argv: Sequence[str] | None) -> Options:
    """The command line, with `--quick` applied to every size not given explicitly."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engines",
        description="Measure Conveyor's engines through TaskService (see benchmarks/README.md).",
    )
    parser.add_argument(
        "--engines",
        default="memory,sqlite",
        help="comma-separated: memory, sqlite, or engine URLs ({dir} = a fresh temp dir)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: sizes divided by ~10")
    parser.add_argument("--output", metavar="FILE", help="also write the markdown report here")
    parser.add_argument("--tmpdir", metavar="DIR", help="where {dir} is made (default: $TMPDIR)")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        help_text = f"default {value:,}" + (" (quick: /10)" if name in SCALED else "")
        parser.add_argument(flag, type=int, metavar="N", default=None, help=help_text)
    args = parser.parse_args(argv)
    values = {}
    for name, value in asdict(defaults).items():
        given = getattr(args, name)
        if given is not None:
            if given < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
            values[name] = given
        elif args.quick and name in SCALED:
            values[name] = max(1, value // QUICK_DIVISOR)
        else:
            values[name] = value
    chosen = [part.strip() for part in args.scenarios.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    targets = parse_targets(args.engines)
    return Options(targets, Settings(**values), chosen, args.output, args.tmpdir)


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    tmpdir = o.tmpdir or tempfile.gettempdir()
    if o.tmpdir is not None and not os.path.isdir(o.tmpdir):
        raise SystemExit(f"--tmpdir {o.tmpdir} is not a directory")
    note(f"engines: {', '.join(f'{t.label} ({t.url})' for t in o.targets)}")
    rows: list[Row] = []
    failed = asyncio.run(run(o, rows))
    described = [("engines", ", ".join(f"{t.label} = `{t.url}`" for t in o.targets))]
    if any("{dir}" in t.url for t in o.targets):
        where = f"a fresh directory per scenario under {tmpdir} ({filesystem(tmpdir)})"
        described.append(("{dir}", where))
    settings = ", ".join(f"{k}={v:,}" for k, v in asdict(o.settings).items())
    described += [("settings", settings), ("scenarios", ", ".join(o.scenarios))]
    if failed:
        described.append(("failed", f"{', '.join(failed)}: see stderr; later rows are missing"))
    report = markdown(rows, described)
    sys.stdout.write(report)
    if o.output is not None:
        with open(o.output, "w", encoding="utf-8") as file:
            file.write(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
