"""Progress lines on stderr (docs/s, MB/s), silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line, rate-limited progress display for one task or one driver loop."""

    def __init__(self, label: str, total_bytes: int | None = None, enabled: bool | None = None,
                 every: float = 0.5) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.every = every
        self.docs = 0
        self.bytes = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._print(now)

    def _print(self, now: float, end: str = "") -> None:
        dt = max(now - self.t0, 1e-9)
        pct = ""
        if self.total_bytes:
            pct = f" {min(100.0, 100.0 * self.bytes / self.total_bytes):5.1f}%"
        sys.stderr.write(
            f"\r{self.label}:{pct} {self.docs:,} docs  {self.docs / dt:,.0f} docs/s  "
            f"{self.bytes / dt / 1e6:,.1f} MB/s{end}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._print(time.monotonic(), end="\n")
