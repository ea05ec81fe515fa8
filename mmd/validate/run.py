"""Validate what ingest added with Great Expectations; quarantine failing rows with reasons.

Reads `<data>/ingested/items.parquet`, writes `<data>/validated/items.parquet` and
`<data>/validated/quarantine.parquet`, and `reports/validation.{json,html}`.

Incremental: the batch is the ingested rows that were neither accepted nor quarantined by an earlier
run under the same rules (`validated/state.json` holds the hash of the `validate` section); when the
rules change, every row is validated again. Reconciles per batch: in = accepted + quarantined. A
batch-level failure (a label share out of bounds, too low a pass rate, a snapshot smaller than
`min_items`) raises `ValidationFailed` after the reports are written, with a message that says what to
do. A batch with nothing new is no failure.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from mmd.config import Settings
from mmd.items import ITEM_SCHEMA, now_iso, read_table, write_table
from mmd.quarantine import QuarantineRecord, append_records, quarantine
from mmd.util import write_json
from mmd.validate.suites import ADVICE, batch_expectations, row_expectations


class ValidationFailed(RuntimeError):
    """The batch as a whole may not go on; the message says why and what to do."""


@dataclass
class BatchCheck:
    kind: str
    expectation: str
    success: bool
    observed: object
    advice: str = ""


@dataclass
class ValidationResult:
    total: int
    accepted: int
    quarantined: int
    per_kind: dict[str, dict[str, int]]
    reasons: dict[str, int]
    batch_checks: list[BatchCheck]
    failures: list[str] = field(default_factory=list)
    items_path: Path | None = None
    quarantine_path: Path | None = None
    report_path: Path | None = None
    html_path: Path | None = None
    total_items: int = 0          # the validated snapshot after this run
    incremental: bool = False     # only rows new since the last run (under the same rules) were validated

    @property
    def pass_rate(self) -> float:
        return self.accepted / self.total if self.total else 1.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "in": self.total,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "reconciled": self.total == self.accepted + self.quarantined,
            "pass_rate": round(self.pass_rate, 6),
            "total_items": self.total_items,
            "incremental": self.incremental,
            "passed": self.passed,
            "failures": self.failures,
            "per_kind": self.per_kind,
            "quarantine_reasons": self.reasons,
            "batch_checks": [
                {"kind": c.kind, "expectation": c.expectation, "success": c.success, "observed": c.observed, "advice": c.advice}
                for c in self.batch_checks
            ],
        }


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def prepare(df: pd.DataFrame, data_root: Path) -> pd.DataFrame:
    """Columns the expectations read that are derived from an item's fields."""
    out = df.copy()
    out["_row"] = range(len(out))
    out["text_stripped"] = out["text"].fillna("").str.strip()
    out["language_primary"] = out["language"].map(lambda s: s.split("-")[0].split("_")[0].lower() if isinstance(s, str) else None)
    out["image_ok"] = out["image_path"].map(lambda p: True if not isinstance(p, str) else (data_root / p).is_file())
    return out


def _describe(config) -> str:
    """An expectation (or the configuration a result carries) as `type(column, bounds)`."""
    given = config.kwargs if hasattr(config, "kwargs") else config.configuration.kwargs
    kind = getattr(config, "type", None) or config.expectation_type
    kw = {k: v for k, v in given.items()
          if v is not None and (k in ("min_value", "max_value", "regex") or (k == "value_set" and len(v) <= 5))}
    col = given.get("column")
    args = ", ".join([*([col] if col else []), *(f"{k}={v}" for k, v in kw.items())])
    return f"{kind}({args})"


def _docs_site(ctx, docs_dir: Path) -> None:
    """Great Expectations' own Data Docs of this run (the suites and their results) in `docs_dir`."""
    import shutil

    shutil.rmtree(docs_dir, ignore_errors=True)  # this run's results only, as the context keeps them
    ctx.add_data_docs_site("mmd", {"class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                                   "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                                     "base_directory": str(docs_dir)}})


def validate_frame(df: pd.DataFrame, settings: Settings, rows: bool = True, batches: bool = True,
                   docs_dir: Path | None = None) -> tuple[dict[int, list[str]], list[BatchCheck]]:
    """Run each kind's suite through a Checkpoint; returns {row: [failed expectations]} and the batch-level
    checks. With `docs_dir`, the Checkpoint also writes Great Expectations' Data Docs there.

    `rows` / `batches` pick the per-row expectations and the ones over the whole batch (shares, counts):
    an incremental run checks its new rows one by one and the shares over the snapshot they join."""
    import great_expectations as gx

    cfg = settings.params.validate_
    ctx = _context()
    if docs_dir is not None:
        _docs_site(ctx, docs_dir)
    source = ctx.data_sources.add_pandas("items")
    failures: dict[int, list[str]] = defaultdict(list)
    checks: list[BatchCheck] = []
    prepared = prepare(df, settings.data_dir)
    for kind, part in prepared.groupby("kind", sort=True):
        if kind not in cfg.kinds:
            for row in part["_row"]:
                failures[int(row)].append(f"kind {kind!r} has no validation rules (validate.kinds)")
            continue
        rules = cfg.kinds[kind]
        exps = [(e, "row") for e in (row_expectations(kind, rules) if rows else [])]
        exps += [(e, "batch") for e in (batch_expectations(kind, rules, 1) if batches else [])
                 # nothing labelled: a share of nothing is not a finding
                 if not (e.expectation_type == "expect_column_mean_to_be_between" and part["label"].notna().sum() == 0)]
        if not exps:
            continue
        for n, (e, scope) in enumerate(exps):
            e.meta = {**(e.meta or {}), "mmd_scope": scope, "mmd_index": n}
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"mmd-{kind}", expectations=[e for e, _ in exps]))
        definition = ctx.validation_definitions.add(gx.ValidationDefinition(
            name=f"validate-{kind}", suite=suite,
            data=source.add_dataframe_asset(f"kind_{kind}").add_batch_definition_whole_dataframe("all")))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["mmd"])] if docs_dir else []
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"mmd-{kind}", validation_definitions=[definition], actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]}))
        run = checkpoint.run(batch_parameters={"dataframe": part.reset_index(drop=True)})
        results = [er for suite_result in run.run_results.values() for er in suite_result.results]
        for er in sorted(results, key=lambda r: (r.expectation_config.meta or {}).get("mmd_index", 0)):
            config = er.expectation_config
            if er.exception_info and er.exception_info.get("raised_exception"):
                raise RuntimeError(f"expectation {config.type} could not run: {er.exception_info['exception_message']}")
            if (config.meta or {}).get("mmd_scope") == "row":
                for hit in er.result.get("unexpected_index_list") or []:
                    failures[int(hit["_row"])].append(_describe(config))
            else:
                checks.append(BatchCheck(kind, _describe(config), bool(er.success), er.result.get("observed_value"),
                                         "" if er.success else ADVICE.get(config.type, "")))
    return failures, checks


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper={pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype()}.get)


def _rules_hash(settings: Settings) -> str:
    from mmd.items import sha256_hex

    return sha256_hex(json.dumps(settings.params.validate_.model_dump(mode="json"), sort_keys=True))


def run_validate(settings: Settings) -> ValidationResult:
    import pyarrow.compute as pc

    from mmd.quarantine import QUARANTINE_SCHEMA

    cfg = settings.params.validate_
    at = settings.layout
    ingested = read_table(at.items_ingested, ITEM_SCHEMA)
    rules = _rules_hash(settings)
    try:
        same_rules = json.loads(at.validate_state.read_text()).get("rules") == rules
    except (OSError, ValueError):
        same_rules = False
    before = read_table(at.items, ITEM_SCHEMA) if same_rules else ITEM_SCHEMA.empty_table()
    done = set(before.column("id").to_pylist())
    if same_rules:
        done |= {i for i in read_table(at.validate_quarantine, QUARANTINE_SCHEMA).column("item_id").to_pylist() if i}
    table = ingested.filter(pc.invert(pc.is_in(ingested.column("id"), pa.array(sorted(done), pa.string())))) \
        if done else ingested
    df = _frame(table)
    incremental = same_rules and before.num_rows > 0
    failures, checks = (validate_frame(df, settings, batches=not incremental, docs_dir=at.validation_docs)
                        if len(df) else ({}, []))

    bad_rows = sorted(failures)
    records: list[QuarantineRecord] = []
    reasons: Counter = Counter()
    for row in bad_rows:
        item = df.iloc[row]
        why = sorted(set(failures[row]))
        reasons.update(w.split("(")[0] for w in why)
        # numpy scalars (label, image size) as JSON numbers, not their str()
        raw = json.dumps({k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in item.items()},
                         default=str, ensure_ascii=False)
        records.append(quarantine(
            "validate", str(item["source"]), why[0].split("(")[0], "; ".join(why), str(item["id"]), raw, str(item["id"]),
            blob_dir=at.validate_raw, data_root=settings.data_dir,
        ))
    keep = pd.Series(True, index=df.index)
    keep.iloc[bad_rows] = False
    accepted = table.filter(pa.array(keep.to_numpy()))
    snapshot = pa.concat_tables([before, accepted])
    if incremental and accepted.num_rows:  # the shares are the snapshot's, not those of a night's few rows
        checks = validate_frame(_frame(snapshot), settings, rows=False,
                                docs_dir=at.validation_docs / "snapshot-shares")[1]
    write_table(snapshot, at.items)
    if not same_rules:  # every row was validated again: the quarantine is this run's
        at.validate_quarantine.unlink(missing_ok=True)
    append_records(at.validate_quarantine, records)
    write_json(at.validate_state, {"rules": rules, "validated_at": now_iso(), "items": before.num_rows + accepted.num_rows})

    per_kind: dict[str, dict[str, int]] = {}
    for kind, kept in keep.groupby(df["kind"]):
        bad = int((~kept).sum())
        per_kind[str(kind)] = {"in": len(kept), "accepted": len(kept) - bad, "quarantined": bad}
    result = ValidationResult(len(df), accepted.num_rows, len(records), per_kind, dict(reasons), checks,
                              items_path=at.items, quarantine_path=at.validate_quarantine,
                              report_path=at.validation_report, html_path=at.validation_html,
                              total_items=before.num_rows + accepted.num_rows, incremental=same_rules)
    if result.total_items < cfg.min_items:
        result.failures.append(
            f"the snapshot has {result.total_items} items, fewer than validate.min_items={cfg.min_items}: "
            "ingest found nothing to validate; check the sources with `mmd status` and run `mmd ingest`"
        )
    for c in checks:
        if not c.success:
            result.failures.append(f"{c.kind}: {c.expectation} failed (observed {c.observed}): {c.advice}")
    if len(df) and result.pass_rate < cfg.min_pass_rate:
        result.failures.append(
            f"only {result.pass_rate:.1%} of rows passed, below validate.min_pass_rate={cfg.min_pass_rate}: "
            f"read the quarantine reasons ({at.validate_quarantine}) and fix the source or its mapping"
        )
    from mmd.results import ValidateReport

    ValidateReport.model_validate({"validated_at": now_iso(), **result.to_dict()}).write(at)
    if not len(df):  # nothing new: no suite ran, and the Data Docs say so rather than show an old run
        import shutil

        shutil.rmtree(at.validation_docs, ignore_errors=True)
        at.validation_docs.mkdir(parents=True)
        (at.validation_docs / "index.html").write_text("<!doctype html><title>Data Docs</title><p>Nothing new to "
                                                       f"validate at {now_iso()}: no suite ran.</p>\n", encoding="utf-8")
    write_html(result, at.validation_html)
    if result.failures:
        raise ValidationFailed("validation failed:\n- " + "\n- ".join(result.failures))
    return result


def write_html(result: ValidationResult, path: Path) -> None:
    """A page a moderator can read: the counts, the batch checks, the quarantine reasons."""
    from mmd.pages import write_page

    write_page(path, "validation.html", r=result, reasons=sorted(result.reasons.items(), key=lambda x: -x[1]))
