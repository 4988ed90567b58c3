"""A batch's progress while `conveyor batch create --wait` waits: a live bar, or log lines.

On a terminal: a rich progress bar with the requests done and failed out of the total, the
rate and the time left; "validating…" while the total is not known yet and "finalizing…"
while the output files are written. Elsewhere (a pipe, a CI log) a bar cannot redraw, so
each change of status is one line instead.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.text import Text

from conveyor.domain.batches import BatchStatus
from conveyor.sdk import BatchInfo

PHASES = {
    BatchStatus.VALIDATING: "validating…",
    BatchStatus.IN_PROGRESS: "running",
    BatchStatus.FINALIZING: "finalizing…",
    BatchStatus.CANCELLING: "cancelling…",
}


def counts_text(batch: BatchInfo) -> str:
    """The request counts as people read them: `12 done, 1 failed of 31`."""
    counts = batch.request_counts
    if batch.status is BatchStatus.VALIDATING and counts.total == 0:
        return "total not known yet"
    return f"{counts.completed} done, {counts.failed} failed of {counts.total}"


class RateColumn(ProgressColumn):
    """Requests ended per second, over rich's recent samples."""

    def render(self, task: ProgressTask) -> Text:
        speed = task.speed
        return Text("" if speed is None else f"{speed:.1f}/s", style="progress.data.speed")


class BatchProgress:
    """Shows a batch's progress; `update` with each poll, use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._live = self._console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            RateColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task: TaskID | None = None
        self._last: tuple[BatchStatus, int] | None = None

    def __enter__(self) -> BatchProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live:
            self._progress.stop()

    def update(self, batch: BatchInfo) -> None:
        """Show `batch` as the latest poll saw it."""
        if self._live:
            self._draw(batch)
        else:
            self._log(batch)

    def _draw(self, batch: BatchInfo) -> None:
        counts = batch.request_counts
        known = batch.status is not BatchStatus.VALIDATING or counts.total > 0
        description = PHASES.get(batch.status, str(batch.status))
        total = counts.total if known else None
        done = counts.completed + counts.failed
        if self._task is None:
            self._task = self._progress.add_task(description, total=total, counts="")
        self._progress.update(
            self._task,
            description=description,
            total=total,
            completed=done,
            counts=counts_text(batch),
        )

    def _log(self, batch: BatchInfo) -> None:
        seen = (batch.status, batch.request_counts.total)
        if seen == self._last:
            return
        self._last = seen
        self._console.print(
            f"batch {batch.id}: {PHASES.get(batch.status, str(batch.status))}"
            f" ({counts_text(batch)})",
            markup=False,
            highlight=False,
        )
