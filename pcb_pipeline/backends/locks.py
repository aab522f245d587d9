"""Waiting out another process's lock: DuckDB allows one writing process per file (readers open read-only), MLflow's
sqlite store likewise. Lock errors are retried with backoff; every other error is raised at once."""
from __future__ import annotations

_LOCK_MARKERS = ("could not set lock", "conflicting lock", "database is locked", "lock on file")


def is_lock_error(exc: BaseException) -> bool:
    """True for 'another process holds the database' errors (DuckDB allows one writing process; sqlite likewise)."""
    text = str(exc).lower()
    return any(m in text for m in _LOCK_MARKERS)


def retry_on_lock(fn, *args, attempts: int = 10, base_delay: float = 0.1, max_delay: float = 4.0, log=None,
                  **kwargs):
    """Call fn, retrying with exponential backoff and jitter while another process holds the warehouse lock."""
    import random
    import time

    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - only lock errors are retried, everything else re-raised
            if not is_lock_error(e) or attempt == attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            if log:
                log(f"warehouse locked by another process (attempt {attempt}/{attempts}); retrying in {delay:.2f}s")
            time.sleep(delay)
