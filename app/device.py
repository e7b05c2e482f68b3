"""Where the models run, decided once per process: what was asked for (SEQ2SEQ_DEVICE) and what was granted.

What a device name means ("auto": CUDA when present) is decided in one place, `model.training.resolve_device`,
which the training process and the CLI use as well; the service adds only what serving needs: CUDA asked for
but absent serves on the CPU instead of failing, and a CUDA failure later falls back the same way, said in
/readyz.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from model.training import resolve_device

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
    try:
        return Device(asked, resolve_device(asked))
    except RuntimeError as exc:  # resolve_device refuses a CUDA device where CUDA is not available
        device = Device(asked, torch.device("cpu"), f"{exc}; serving on cpu")
        log.warning(device.note)
        return device
