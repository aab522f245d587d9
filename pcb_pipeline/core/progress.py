"""Progress lines for long steps: `label: 120/600 (20%)  elapsed 0:42  ETA 2:48`, about every tenth of the work.

Reports on counts, not on a timer, so the same run prints the same lines on any machine.
"""
from __future__ import annotations

import time
from typing import Callable


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    return f"{minutes}:{secs:02d}"


def progress_line(label: str, done: int, total: int, elapsed: float) -> str:
    eta = elapsed / done * (total - done) if done else float("nan")
    pct = 100 * done // total if total else 100
    return f"{label}: {done}/{total} ({pct}%)  elapsed {clock(elapsed)}  ETA {clock(eta) if done else '?'}"


class Progress:
    """Call `step()` once per item; `log` receives a line at each tenth of `total` (and at the end)."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], steps: int = 10):
        self.label, self.total, self.log = label, total, log
        self.marks = {max(1, round(total * k / steps)) for k in range(1, steps + 1)} if total else set()
        self.done = 0
        self.started = time.monotonic()

    def step(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        if any(before < m <= self.done for m in self.marks):
            self.log(progress_line(self.label, self.done, self.total, time.monotonic() - self.started))
