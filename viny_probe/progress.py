"""Rich progress bars for long work (training epochs, extraction), silent when disabled or not a TTY."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class _EpochBar:
    def __init__(self, progress: Progress | None, description: str) -> None:
        self.progress, self.description = progress, description

    def start_epoch(self, epoch: int, epochs: int, total: int):
        return self.start_task(f"{self.description} {epoch + 1}/{epochs}", total)

    def start_task(self, label: str, total: int):
        """A new bar of ``total`` images (the earlier ones hidden): an epoch, or a fleet's whole training."""
        if self.progress is None:
            return None
        for task in self.progress.task_ids:
            self.progress.update(task, visible=False)
        return self.progress.add_task(label, total=total, loss=float("nan"), speed=0.0)

    def advance(self, task, n: int, loss: float | None, img_per_s: float) -> None:
        """Move on ``n`` images; ``loss`` None keeps the loss last shown (it is read only now and then)."""
        if self.progress is not None and task is not None:
            fields = {"speed": img_per_s} if loss is None else {"loss": loss, "speed": img_per_s}
            self.progress.update(task, advance=n, **fields)


@contextlib.contextmanager
def epoch_progress(enabled: bool = True, description: str = "train"):
    """A bar per epoch showing images done, loss and img/s. Disabled, or stderr not a terminal (a log
    file, where a live bar leaves only blank lines): a no-op with the same interface."""
    if not enabled or not console.is_terminal:
        yield _EpochBar(None, description)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[speed]:.0f} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        yield _EpochBar(progress, description)


def track(iterable, total: int | None = None, description: str = "working", enabled: bool = True):
    """Iterate with a progress bar (for extraction and other long loops); plain iteration when disabled
    or when stderr is not a terminal."""
    if not enabled or not console.is_terminal:
        yield from iterable
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield from progress.track(iterable, total=total, description=description)
