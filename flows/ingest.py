"""The ingest flow: pull what is new, then validate it. Runs more often than a retrain.

It wires library calls together and owns only time: retries where a source said it was unreachable, one run
at a time (the cycle lock: a retrain cycle ingests too, so this flow waits for one that is
running), a summary artifact. In a DVC project both stages go through `dvc repro`, so the next
retrain finds them done. No ML logic lives here.

    python -m flows.ingest [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.common import retry_if_retryable
from mmd.config import load_settings
from mmd.cycle import cycle_lock, run_stage
from mmd.results import IngestReport, ValidateReport


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_retryable)
def ingest(params: str, use_dvc: bool | None) -> IngestReport:
    """Retried when every file of a source was unreachable; each retry resumes from the watermarks."""
    return run_stage(load_settings(params), "ingest", use_dvc).result


@task
def validate(params: str, use_dvc: bool | None) -> ValidateReport:
    """A batch-level failure raises: the flow run fails and says why."""
    return run_stage(load_settings(params), "validate", use_dvc).result


@flow(name="mmd-ingest", flow_run_name="ingest {params}", log_prints=True)
def ingest_flow(params: str = "params.yaml", use_dvc: bool | None = None, wait: bool = True) -> dict:
    """Ingest every enabled source, then validate the snapshot."""
    params = str(Path(params).resolve())
    with cycle_lock(load_settings(params), wait=wait):
        got = ingest(params, use_dvc)
        checked = validate(params, use_dvc)
    create_table_artifact(
        key="mmd-ingest-summary",
        table=[{"name": s.name, "in": s.in_, "accepted": s.accepted, "quarantined": s.quarantined,
                "duplicates": s.duplicates, "skipped": s.skipped} for s in got.sources],
        description=f"validation pass rate {checked.pass_rate:.1%}",
    )
    get_run_logger().info("ingested %s new items; %s of %s pass validation",
                          got.totals.accepted, checked.accepted, checked.in_)
    return {"ingest": got, "validate": checked}


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Ingest and validate what is new, under Prefect.")
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument("--no-dvc", dest="use_dvc", action="store_false", default=None, help="call the stages directly")
    args = cli.parse_args()
    ingest_flow(args.params, use_dvc=args.use_dvc)
