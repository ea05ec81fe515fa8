"""review: the champions score what is new; the likeliest and the most uncertain join the moderators' queue
(`mmd.review.queue`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import ReviewReport


def run(settings: Settings, log=None) -> ReviewReport:
    from mmd.review.queue import run_review

    return run_review(settings, log=log)
