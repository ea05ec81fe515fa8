"""The Great Expectations suites, one per item kind, built from `params.validate`.

Row-level expectations decide which rows go to the quarantine; batch-level ones (row
count, label share) decide whether the stage may pass at all.
"""

from __future__ import annotations

from functools import lru_cache

from mmd.config import KindRules

SHA256 = r"^[0-9a-f]{64}$"
URL = r"^https?://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?$"  # no capture group: pandas warns on those


@lru_cache(maxsize=1)
def language_codes() -> tuple[str, ...]:
    """ISO 639-1 and 639-3 codes: the primary subtag of a valid language tag."""
    import pycountry

    codes = {lang.alpha_3 for lang in pycountry.languages}
    codes |= {getattr(lang, "alpha_2") for lang in pycountry.languages if hasattr(lang, "alpha_2")}
    return tuple(sorted(codes))


def row_expectations(kind: str, rules: KindRules) -> list[gxe.Expectation]:
    """Per-row checks; a failing row is quarantined with the expectation's name as its reason."""
    import great_expectations.expectations as gxe  # here, not at import: GX takes seconds to import

    exps: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=[kind]),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text_stripped", min_value=rules.text_min_chars, max_value=rules.text_max_chars),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),  # nulls (unlabeled) pass
        gxe.ExpectColumnValuesToMatchRegex(column="image_sha256", regex=SHA256),
        gxe.ExpectColumnValuesToBeDateutilParseable(column="published_at"),
        gxe.ExpectColumnValuesToBeDateutilParseable(column="claim_date"),
        gxe.ExpectColumnValuesToBeDateutilParseable(column="ingested_at"),
        gxe.ExpectColumnValuesToBeInSet(column="language_primary", value_set=list(language_codes())),
        gxe.ExpectColumnValuesToMatchRegex(column="url", regex=URL),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
        # an image the row names must still be where it says, whatever the kind
        gxe.ExpectColumnValuesToBeInSet(column="image_ok", value_set=[True]),
    ]
    if rules.image_required:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="image_path"))
    if rules.url_required:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="url"))
    return exps


def batch_expectations(kind: str, rules: KindRules, min_items: int) -> list[gxe.Expectation]:
    """Checks on the batch as a whole; a failure fails the stage."""
    import great_expectations.expectations as gxe

    lo, hi = rules.label_share
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=min_items),
        gxe.ExpectColumnMeanToBeBetween(column="label", min_value=lo, max_value=hi),
    ]


# what a person should do when a batch-level check fails
ADVICE = {
    "expect_table_row_count_to_be_between": "no items of this kind came in: check that the sources are enabled and reachable (`mmd status`), or lower validate.min_items",
    "expect_column_mean_to_be_between": "the share of positive labels is outside validate.kinds.<kind>.label_share: check the source's label mapping (ratings table / meme spec) before training on it",
}
