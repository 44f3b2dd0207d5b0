"""Rich progress: bars for the library's Reporter protocol and for Keras training (the library never imports
rich)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import console


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


class RichReporter:
    """braintumor.progress.Reporter on a Rich ``Progress``: each ``start`` opens a bar (an ``advance`` before any
    ``start`` opens one called ``label`` of unknown length); ``log`` prints above the bars."""

    def __init__(self, progress: Progress, label: str = "working") -> None:
        self.progress, self.label = progress, label
        self.task = None

    def start(self, total: int | None, label: str) -> None:
        self.task = self.progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=None)
        self.progress.advance(self.task, n)

    def log(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)


def keras_progress(progress: Progress, epochs: int, label: str = ""):
    """A Keras callback showing epochs and batches in ``progress`` with the latest losses."""
    import keras  # lazy: TensorFlow takes seconds to import

    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not hasattr(self, "epoch_task"):
                self.epoch_task = progress.add_task(f"{label}epoch", total=epochs)
                self.batch_task = progress.add_task("  batch", total=self.params.get("steps") or None)

        def on_epoch_begin(self, epoch, logs=None):
            progress.reset(self.batch_task, total=self.params.get("steps") or None)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            progress.update(self.batch_task, advance=1,
                            description=f"  batch  loss {loss:.3f}" if loss is not None else "  batch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            desc = (f"{label}epoch  loss {logs.get('loss', float('nan')):.3f} "
                    f"val_loss {logs.get('val_loss', float('nan')):.3f} "
                    f"val_acc {logs.get('val_accuracy', float('nan')):.3f}")
            progress.update(self.epoch_task, completed=epoch + 1, description=desc)

        def on_train_end(self, logs=None):
            progress.update(self.epoch_task, total=progress.tasks[self.epoch_task].completed)

    return RichProgress()
