"""One module per source family; each yields items (or quarantine records) to ingest."""

from __future__ import annotations

from typing import Callable, Iterator

from mmd.sources.base import SourceContext, Skipped, SourceUnavailable, Yield


def reader(source_type: str) -> Callable[..., Iterator[Yield]]:
    """The `read(ctx, cfg)` function of a source type."""
    from mmd.sources import claimreview, factcheck_api, inbox, mediaeval, memes

    return {
        "claimreview": claimreview.read,
        "factcheck_api": factcheck_api.read,
        "memes": memes.read,
        "mediaeval": mediaeval.read,
        "inbox": inbox.read,
    }[source_type]


__all__ = ["SourceContext", "Skipped", "SourceUnavailable", "Yield", "reader"]
