"""Errors a scheduler should retry: the world was flaky, trying again later can succeed.

A stage raises a `Retryable` only when waiting can help (every file of a source failed to read for a
transient reason, a remote refused a push); everything else is a bug or bad input and a retry would
only repeat it. Through `dvc repro` the stage's process exits with `EXIT_RETRYABLE` (EX_TEMPFAIL)
and the runner raises `Retryable` again on the other side.
"""

from __future__ import annotations

from typing import Any

EXIT_RETRYABLE = 75  # sysexits.h EX_TEMPFAIL


class Retryable(RuntimeError):
    """Transient: the same call may succeed later."""


class SourceUnavailable(Retryable):
    """Every file (or page) of a source failed for a transient reason (network, I/O): retry the run later.

    Raised by `run_ingest` after every source has run and every output is written, so a retry re-reads
    only what failed (the others' watermarks moved); the run's result rides along."""

    def __init__(self, sources: dict[str, str], result: Any = None):
        super().__init__("source unavailable, worth a retry: " + "; ".join(f"{k}: {v}" for k, v in sources.items()))
        self.sources = sources
        self.result = result


class PushFailed(Retryable):
    """The DVC remote could not be reached or refused the push."""
