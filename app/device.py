"""Where the models run, decided once per process: what was asked for (SEQ2SEQ_DEVICE) and what was granted."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("seq2seq.device")


@dataclass
class Device:
    asked: str  # auto | cpu | cuda | cuda:N
    granted: torch.device
    note: str | None = None  # why granted differs from asked, for /readyz and the log

    def fall_back(self, reason: str) -> None:
        """A CUDA failure at run time (a load that ran out of memory, a broken driver): serve on the CPU."""
        self.note = f"{self.granted} failed ({reason}); serving on cpu"
        self.granted = torch.device("cpu")
        log.error(self.note)

    def __str__(self) -> str:
        return str(self.granted)


def resolve(asked: str) -> Device:
    if asked == "auto":
        return Device(asked, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if asked.startswith("cuda") and not torch.cuda.is_available():
        device = Device(asked, torch.device("cpu"), f"{asked} was asked for but CUDA is not available; serving on cpu")
        log.warning(device.note)
        return device
    return Device(asked, torch.device(asked))
