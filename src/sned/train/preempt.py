"""Stop signals during training: finish the step, agree across ranks, save once, exit 130.

:class:`StopSignal` catches SIGINT / SIGTERM while :meth:`Trainer.fit` runs and only sets a
flag; the trainer reads it where every rank reads it at the same step (one all-reduce per
step, :meth:`sned.train.trainer.Trainer._agree`), so a signal on ANY rank stops ALL ranks after
the same step and no rank is left waiting in a collective or at a barrier.

A second signal stops at once (KeyboardInterrupt) — except, under torchrun, within
``relay_s`` seconds of the first: a terminal's Ctrl-C reaches every rank and torchrun relays it
as SIGTERM, which must not cancel the orderly stop.
"""

from __future__ import annotations

import signal
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """The stop flag of one trainer (``signum``: the first signal caught, or None).

    Args:
        world: number of ranks (the relay rule applies when > 1).
        relay_s: seconds in which a repeated signal counts as the same stop request.
    """

    def __init__(self, world: int = 1, relay_s: float = 5.0) -> None:
        self.world, self.relay_s = world, relay_s
        self.signum: int | None = None
        self._time = 0.0
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if self.world > 1 and now - self._time < self.relay_s:
                return
            raise KeyboardInterrupt
        self.signum, self._time = signum, now

    def install(self) -> None:
        """Catch SIGINT / SIGTERM (from the main thread; elsewhere nothing is installed)."""
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}

    @property
    def caught(self) -> bool:
        return self.signum is not None
