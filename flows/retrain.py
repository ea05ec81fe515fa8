"""The retrain flow: one whole cycle, read top to bottom.

ingest -> validate -> embed -> index -> synthesize -> select -> train (each detector in
`evaluate.families`) -> evaluate -> gate (promote or hold, the report) -> e-mail.

It owns time only: retries with backoff where the world is flaky (sources, SMTP), one
cycle at a time (`mmd.cycle.cycle_lock`), each stage through `dvc repro` in a DVC project
so a cycle started again after a failure resumes instead of redoing, a Prefect artifact
with the decisions. No ML logic lives here.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff

from mmd.config import load_settings
from mmd.cycle import cycle_lock, run_stage


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5)
def ingest(params: str, use_dvc: bool | None) -> dict:
    """Sources are flaky; a retry resumes from the watermarks of the last success."""
    return run_stage(load_settings(params), "ingest", use_dvc)


@task(task_run_name="{stage}")
def stage(params: str, stage: str, use_dvc: bool | None) -> dict:
    return run_stage(load_settings(params), stage, use_dvc)


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_jitter_factor=0.5)
def email(params: str, gate: dict) -> dict:
    """The report to the moderators; a server that is down leaves it in the outbox for the next cycle."""
    from mmd.report import send_cycle_report

    return send_cycle_report(load_settings(params), gate).to_dict()


def _summary(gate: dict) -> str:
    rows = ["| model | decision | action | champion | reasons |", "|---|---|---|---|---|"]
    for family, d in gate.get("families", {}).items():
        rows.append(f"| {family} | {d['status']} | {d['action']} | {d.get('champion_after') or '-'} | "
                    + "<br>".join(d.get("reasons", [])) + " |")
    return "\n".join(rows) + f"\n\nReport: `{gate.get('report_html')}`"


@flow(name="mmd-retrain", flow_run_name="retrain-{params}", log_prints=True)
def retrain_flow(params: str = "params.yaml", use_dvc: bool | None = None, wait: bool = False) -> dict:
    """One cycle. `use_dvc`: run the stages through `dvc repro` (default: when the project is a DVC
    repository). `wait`: wait for a running cycle to finish instead of being refused."""
    params = str(Path(params).resolve())
    settings = load_settings(params)
    log = get_run_logger()
    with cycle_lock(settings, wait=wait):
        ran = {"ingest": ingest(params, use_dvc)}
        for name in ("validate", "embed", "index", "synthesize", "select"):
            ran[name] = stage(params, name, use_dvc)
        for family in settings.params.evaluate.families:
            ran[f"train_{family}"] = stage(params, f"train_{family}", use_dvc)
        ran["evaluate"] = stage(params, "evaluate", use_dvc)
        gate = ran["gate"] = stage(params, "gate", use_dvc)
        create_markdown_artifact(key="mmd-gate", markdown=_summary(gate), description="the gate's decisions")
        ran["email"] = email(params, gate)
    for family, d in gate["families"].items():
        log.info("%s: %s -> %s", family, d["status"], d["action"])
    return ran


if __name__ == "__main__":
    retrain_flow()
