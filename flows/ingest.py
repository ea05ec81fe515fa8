"""The ingest flow: pull what is new, then validate it. Runs more often than a retrain.

It wires library calls together and owns only time: retries where the world is flaky,
one run at a time, a summary artifact. No ML logic lives here.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from mmd.config import load_settings
from mmd.ingest import run_ingest
from mmd.validate import run_validate


@task(retries=2, retry_delay_seconds=[10, 60])
def ingest(params: str) -> dict:
    """Sources are flaky; each retry resumes from the watermarks of the last success."""
    return run_ingest(load_settings(params), show_progress=False).to_dict()


@task
def validate(params: str) -> dict:
    """A batch-level failure raises: the flow run fails and says why."""
    return run_validate(load_settings(params)).to_dict()


@flow(name="mmd-ingest", flow_run_name="ingest-{params}", log_prints=True)
def ingest_flow(params: str = "params.yaml") -> dict:
    """Ingest every enabled source, then validate the snapshot."""
    params = str(Path(params).resolve())
    got = ingest(params)
    checked = validate(params)
    create_table_artifact(
        key="mmd-ingest-summary",
        table=[{k: s[k] for k in ("name", "in", "accepted", "quarantined", "duplicates", "skipped")} for s in got["sources"]],
        description=f"validation pass rate {checked['pass_rate']:.1%}",
    )
    get_run_logger().info("ingested %s new items; %s of %s pass validation",
                          got["totals"]["accepted"], checked["accepted"], checked["in"])
    return {"ingest": got, "validate": checked}


if __name__ == "__main__":
    ingest_flow()
