"""The files a training run keeps in its folder beside the checkpoint (see :class:`RunFolder`);
TensorBoard events need the optional tensorboardX (the ``tensorboard`` extra)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it over ``path``: a crash leaves the old file
    or the new one, never half of one. (Plain ``open``, not a mkstemp file, so the file gets the
    usual umask permissions rather than 0600.)"""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _write_json(path: Path, value: Any) -> None:
    _replace_text(path, json.dumps(value, indent=1) + "\n")


class RunFolder:
    """The files a run keeps beside its checkpoint, in ``path``:

    * ``config.json``: the config the run trains with;
    * ``history.json``: per epoch, the epoch, learning rate, elapsed seconds and the metrics,
      rewritten after every epoch;
    * ``steps.csv``: ``epoch,step,loss,lr`` of every training step;
    * ``tensorboard/``: the same numbers as TensorBoard events, when tensorboardX is installed
      (the ``tensorboard`` extra), written by its ``SummaryWriter``.

    A run resumed after ``start_epoch`` keeps the steps of the epochs up to it and drops those
    of an epoch it is about to train again."""

    STEPS_HEADER = "epoch,step,loss,lr"

    def __init__(
        self, path: str | os.PathLike, config: dict, start_epoch: int = 0, start_step: int = 0
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.path / "config.json", config)
        steps = self.path / "steps.csv"
        kept = [self.STEPS_HEADER]
        if start_epoch and steps.is_file():
            kept += [
                row
                for row in steps.read_text().splitlines()[1:]
                if row and int(row.split(",", 1)[0]) <= start_epoch
            ]
        _replace_text(steps, "\n".join(kept) + "\n")
        self._steps = open(steps, "a")  # kept open for the run; close() closes it
        self.board = None
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        # purge_step drops the events a resumed run is about to write again
        self.board = SummaryWriter(
            str(self.path / "tensorboard"), purge_step=start_step + 1 if start_epoch else None
        )

    def log_step(self, epoch: int, step: int, global_step: int, loss: float, lr: float) -> None:
        self._steps.write(f"{epoch},{step},{loss!r},{lr!r}\n")
        if self.board is not None:
            self.board.add_scalar("train/step_loss", loss, global_step)
            self.board.add_scalar("train/lr", lr, global_step)

    def log_epoch(self, history: dict[str, list], global_step: int) -> None:
        self._steps.flush()
        _write_json(self.path / "history.json", history)
        if self.board is not None:
            for key, values in history.items():
                if key != "epoch":
                    self.board.add_scalar(f"epoch/{key}", values[-1], global_step)
            self.board.flush()

    def close(self) -> None:
        self._steps.close()
        if self.board is not None:
            self.board.close()
