"""The sections around the stages: the demo corpus and the scheduled cycle."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------- demo
class DemoConfig(_Strict):
    seed: int = 0
    memes: int = Field(60, ge=0)
    claims: int = Field(40, ge=0)
    posts: int = Field(40, ge=0)


# --------------------------------------------------------------------------- cycle
_CRON = re.compile(r"@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*,/\-A-Za-z?]+(\s+[0-9*,/\-A-Za-z?]+){4}")


class DeploymentConfig(_Strict):
    """One scheduled deployment of a flow (flows/deploy.py)."""

    flow: Literal["ingest", "retrain"]
    cron: str | None = None             # a cron expression in `cycle.timezone`; None: run only when triggered
    paused: bool = False                # registered with its schedule paused
    parameters: dict[str, Any] = Field(default_factory=dict)  # the flow's parameters, e.g. {params: configs/x.yaml}
    description: str = ""

    @model_validator(mode="after")
    def _cron_shape(self) -> "DeploymentConfig":
        # the shape only (Prefect checks the values when it registers the schedule)
        if self.cron is not None and not _CRON.fullmatch(self.cron.strip()):
            raise ValueError(f"cron {self.cron!r} is not five cron fields (minute hour day month weekday) nor a @macro")
        return self


class CycleConfig(_Strict):
    """The scheduled loop (flows/): when it runs and what a cycle does around its stages."""

    dvc: Literal["auto", "on", "off"] = "auto"   # stages through `dvc repro`; auto: in a DVC project
    wait: bool = False                  # a cycle that finds another running is refused (false) or waits (true)
    push: Literal["auto", "on", "off"] = "auto"  # `dvc push` after a cycle; auto: when DVC has a default remote
    commit: bool = False                # git-commit dvc.lock, metrics and reports after a cycle (what a clone reproduces)
    timezone: str = "UTC"               # of the cron schedules
    deployments: dict[str, DeploymentConfig] = Field(default_factory=lambda: {
        "ingest-hourly": DeploymentConfig(flow="ingest", cron="0 * * * *"),
        "retrain-nightly": DeploymentConfig(flow="retrain", cron="30 2 * * *"),
    })

    @model_validator(mode="after")
    def _known_timezone(self) -> "CycleConfig":
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


# --------------------------------------------------------------------------- notify
TlsMode = Literal["starttls", "ssl", "none"]


class NotifyConfig(BaseModel):
    """The `notify` section: who gets the report, and how it leaves (not with which secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    to: tuple[str, ...] = ("moderators@example.org",)  # the moderators' list
    sender: str = "mmd@localhost"
    subject: str = "[mmd] cycle {date}: {summary}"  # {date}, {summary} filled in
    transport: Literal["outbox", "smtp"] = "outbox"  # the embedded default writes to the outbox only
    outbox: str = "outbox"  # folder, relative to the data folder
    attach: tuple[str, ...] = ()  # extra files to attach; relative paths are under the data folder
    # a larger attachment (Evidently's drift pages are about 4 MB) is left out and linked to the app instead
    max_attachment_bytes: int = 2_000_000
    max_message_bytes: int = 10_000_000  # the attachments together; what would pass it is linked too
    timeout_s: float = 10.0

    @field_validator("to")
    @classmethod
    def _some_recipients(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or not all(a.strip() for a in v):
            raise ValueError("needs at least one recipient, and no empty ones")
        return v

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, v: str) -> str:
        try:
            v.format(date="2000-01-01", summary="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{date}} and {{summary}} may be filled in ({e!r})") from None
        return v

    @field_validator("max_attachment_bytes", "max_message_bytes", "timeout_s")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive")
        return v
