"""What the flows share: a retry only when the callee said the failure was transient (`mmd.errors.Retryable`)."""

from __future__ import annotations


def retry_if_retryable(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry a failed task run only for a `Retryable` error."""
    from mmd.errors import Retryable

    try:
        state.result()
    except Retryable:
        return True
    except Exception:  # a bug or bad input: retrying would repeat it
        return False
    return False
