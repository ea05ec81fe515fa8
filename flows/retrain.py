"""The retrain flow: one whole cycle, read top to bottom.

ingest -> validate -> embed -> index -> synthesize -> select -> train (each detector in
`evaluate.families`) -> evaluate -> gate (promote or hold, the report) -> e-mail -> dvc push / commit.

It owns time only: retries with backoff where the world is flaky (sources, SMTP, the DVC remote),
one cycle at a time (`mmd.cycle.cycle_lock`; a deployment also has a concurrency limit of one),
each stage through `dvc repro` in a DVC project so that a cycle started again after a failure
resumes instead of redoing (DVC caches every stage by its inputs), Prefect artifacts with the
decisions and links to the reports. No ML logic lives here.

    python -m flows.retrain [--params params.yaml] [--wait] [--no-dvc]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from mmd.config import load_settings
from mmd.cycle import cycle_lock, cycle_stages, run_stage, summary_rows, version_cycle


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5)
def ingest(params: str, use_dvc: bool | None) -> dict:
    """Sources are flaky; a retry resumes from the watermarks of the last success."""
    return run_stage(load_settings(params), "ingest", use_dvc)


@task(task_run_name="{name}")
def stage(params: str, name: str, use_dvc: bool | None) -> dict:
    return run_stage(load_settings(params), name, use_dvc)


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_jitter_factor=0.5)
def email(params: str, gate: dict) -> dict:
    """The report to the moderators; a server that is down leaves it in the outbox for the next cycle."""
    from mmd.report import send_cycle_report

    return send_cycle_report(load_settings(params), gate).to_dict()


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_jitter_factor=0.5)
def version(params: str, gate: dict, use_dvc: bool | None) -> dict:
    """Data and models to the DVC remote (flaky: retried), dvc.lock committed when `cycle.commit` is on."""
    return version_cycle(load_settings(params), gate, use_dvc)


def publish(ran: dict, mail: dict) -> None:
    """The run's artifacts in the Prefect UI: the gate's decisions with links, and the stage table."""
    gate = ran["gate"]["report"]
    rows = ["| model | decision | action | champion | reasons |", "|---|---|---|---|---|"]
    for family, d in gate.get("families", {}).items():
        rows.append(f"| {family} | {d['status']} | {d['action']} | {d.get('champion_after') or '-'} | "
                    + "<br>".join(d.get("reasons", [])) + " |")
    report = Path(gate.get("report_html", ""))
    links = [f"- [moderators' report]({report.as_uri()})" if report.is_absolute() else "",
             f"- e-mail: `{mail.get('path') or mail.get('outbox')}`" + (" (queued)" if mail.get("queued") else " (sent)")]
    drift = report.parent / "drift" if report.is_absolute() else None
    if drift and drift.is_dir():
        links += [f"- [{p.stem}]({p.as_uri()})" for p in sorted(drift.glob("*.html"))]
    create_markdown_artifact(key="mmd-gate", markdown="\n".join(rows + [""] + [x for x in links if x]),
                             description="the gate's decisions")
    create_table_artifact(key="mmd-cycle", table=summary_rows(ran), description="the stages of this cycle")


def _run_name() -> str:
    params = Path(flow_run.parameters.get("params", "params.yaml"))
    return f"retrain {params.resolve().parent.name}/{params.name} {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"


@flow(name="mmd-retrain", flow_run_name=_run_name, log_prints=True)
def retrain_flow(params: str = "params.yaml", use_dvc: bool | None = None, wait: bool | None = None) -> dict:
    """One cycle. `use_dvc`: run the stages through `dvc repro` (default `cycle.dvc`). `wait`: wait for a
    running cycle to finish instead of being refused (default `cycle.wait`)."""
    params = str(Path(params).resolve())
    settings = load_settings(params)
    log = get_run_logger()
    with cycle_lock(settings, wait=settings.params.cycle.wait if wait is None else wait):
        first, *rest = cycle_stages(settings)
        ran = {first: ingest(params, use_dvc)}
        for name in rest:
            ran[name] = stage(params, name, use_dvc)
        gate = ran["gate"]["report"]
        mail = ran["email"] = email(params, gate)
        ran["version"] = version(params, gate, use_dvc)
        publish(ran, mail)
    for family, d in gate["families"].items():
        log.info("%s: %s -> %s", family, d["status"], d["action"])
    return ran


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="One whole mmd cycle under Prefect.")
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument("--wait", action="store_true", default=None, help="wait for a running cycle instead of refusing")
    cli.add_argument("--no-dvc", dest="use_dvc", action="store_false", default=None, help="call the stages directly")
    args = cli.parse_args()
    retrain_flow(args.params, use_dvc=args.use_dvc, wait=args.wait)
