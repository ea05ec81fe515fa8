"""The retrain flow: one whole cycle, read top to bottom.

ingest -> validate -> embed -> index -> synthesize -> select -> train (each detector in
`evaluate.families`) -> evaluate -> gate (promote or hold) -> report -> e-mail -> dvc push / commit.

It owns time only: retries with backoff where the callee says the world was flaky (`mmd.errors.Retryable`:
every file of a source unreachable, the DVC remote down; the e-mail needs none, its outbox keeps what could
not go out for the next cycle), one cycle at a time (`mmd.cycle.cycle_lock`; a deployment also has a
concurrency limit of one), each stage through `dvc repro` in a DVC project so that a cycle started again
after a failure resumes instead of redoing, Prefect artifacts with the decisions and links to the reports.
No ML logic lives here.

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

from flows.common import retry_if_retryable
from mmd.config import load_settings
from mmd.cycle import StageRun, cycle_lock, cycle_stages, run_stage, summary_rows, version_cycle
from mmd.results import GateReport


@task(task_run_name="{name}", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10),
      retry_jitter_factor=0.5, retry_condition_fn=retry_if_retryable)
def stage(params: str, name: str, use_dvc: bool | None) -> StageRun:
    """One stage; retried only when it says the world was flaky (a retry of ingest resumes from the watermarks)."""
    log = get_run_logger()
    run = run_stage(load_settings(params), name, use_dvc, log=log.info)
    log.info("%s %s (%s, %.1fs): %s", name, run.status, run.how, run.seconds, run.row()["figures"])
    return run


@task
def email(params: str, gate: GateReport) -> dict:
    """The report to the moderators; a server that is down leaves it in the outbox for the next cycle."""
    from mmd.report import send_cycle_report

    delivery = send_cycle_report(load_settings(params), gate).to_dict()
    get_run_logger().info("e-mail: %d sent, %d queued", len(delivery.get("sent") or []), len(delivery.get("queued") or []))
    return delivery


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=30), retry_jitter_factor=0.5,
      retry_condition_fn=retry_if_retryable)
def version(params: str, gate: GateReport, use_dvc: bool | None) -> dict:
    """Data and models to the DVC remote (retried when it is unreachable), dvc.lock committed when `cycle.commit` is on."""
    return version_cycle(load_settings(params), gate, use_dvc)


def publish(settings, ran: dict[str, StageRun], gate: GateReport, mail: dict) -> None:
    """The run's artifacts in the Prefect UI: the gate's decisions with their key figures and links into the
    moderators' app (`app.base_url`: a browser opens them, unlike file paths), and the stage table."""
    from mmd.report import app_links

    def fig(m: dict | None, key: str) -> str:
        return "-" if not m or m.get(key) is None else f"{m[key]:.3f}"

    rows = ["| model | decision | action | champion | holdout macro-F1 (challenger / champion) | AUROC | reasons |",
            "|---|---|---|---|---|---|---|"]
    for family, d in gate.families.items():
        chal = (d.metrics.get("challenger") or {}).get("holdout")
        champ = (d.metrics.get("champion") or {}).get("holdout")
        rows.append(f"| {family} | {d.status} | {d.action} | {d.champion_after or '-'} | "
                    f"{fig(chal, 'macro_f1')} / {fig(champ, 'macro_f1')} | {fig(chal, 'auroc')} / {fig(champ, 'auroc')} | "
                    + "<br>".join(d.reasons) + " |")
    app = app_links(settings, gate)
    links = [f"- [the cycle report]({app['cycle']}) · [review queue]({app['queue']}) · [models]({app['models']})"]
    links += [f"- [model card, {name}]({url})" for name, url in app["cards"].items()]
    links.append(f"- e-mail: `{mail.get('path') or mail.get('outbox')}`" + (" (queued)" if mail.get("queued") else " (sent)"))
    create_markdown_artifact(key="mmd-gate", markdown="\n".join(rows + [""] + links), description="the gate's decisions")
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
        ran: dict = {}
        for s in cycle_stages(settings):
            ran[s.name] = stage(params, s.name, use_dvc)
        gate = ran["gate"].result
        mail = ran["email"] = email(params, gate)
        ran["version"] = version(params, gate, use_dvc)
        publish(settings, ran, gate, mail)
    for family, d in gate.families.items():
        log.info("%s: %s -> %s", family, d.status, d.action)
    return ran


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="One whole mmd cycle under Prefect.")
    cli.add_argument("--params", default="params.yaml")
    cli.add_argument("--wait", action="store_true", default=None, help="wait for a running cycle instead of refusing")
    cli.add_argument("--no-dvc", dest="use_dvc", action="store_false", default=None, help="call the stages directly")
    args = cli.parse_args()
    retrain_flow(args.params, use_dvc=args.use_dvc, wait=args.wait)
