"""The ingest flow runs for real under Prefect (a temporary local API), on the demo inbox."""

from __future__ import annotations

import pytest

from mmd.demo import generate

pytestmark = pytest.mark.slow


def test_ingest_flow_runs_and_reconciles(make_settings):
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest_flow

    settings = make_settings(demo={"memes": 8, "claims": 6, "posts": 6})
    generate(settings.path("inbox"), settings.params.demo)
    with prefect_test_harness(server_startup_timeout=120):
        first = ingest_flow(str(settings.params_file))
        second = ingest_flow(str(settings.params_file))
    assert first["ingest"].reconciled and first["ingest"].totals.accepted > 0
    assert first["validate"].in_ == first["ingest"].total_items
    # the second run finds nothing new, and validates nothing again
    assert second["ingest"].totals.accepted == 0
    assert (second["validate"].in_, second["validate"].incremental) == (0, True)
    assert second["validate"].total_items == first["validate"].total_items == first["validate"].accepted
