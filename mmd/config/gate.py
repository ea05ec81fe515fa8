"""The `gate` section: the promotion gate's checks and thresholds, and the drift methods it uses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_COLUMNS = ("text_length", "word_count", "label", "kind", "source", "language", "has_image",
                   "image_width", "image_height", "image_brightness")


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_method: str = "ks"
    num_threshold: float = 0.05
    cat_method: str = "chisquare"
    cat_threshold: float = 0.05
    drift_share: float = Field(0.5, ge=0.0, le=1.0)
    # mmd: the squared maximum mean discrepancy (RBF kernel, median heuristic), drift above
    # 0.015 (Evidently's default). Measured on two samples of one distribution (unit vectors,
    # 16-d and 512-d, 50 to 500 rows a side, 8 seeds each): no false alarm, where the domain
    # classifier ("model", ROC AUC > 0.55) raised 7 in 48, most at 50 to 150 rows.
    # Other methods' own thresholds: model 0.55, ratio 0.2, distance 0.2; set it with the method.
    embedding_method: Literal["model", "mmd", "ratio", "distance"] = "mmd"
    embedding_threshold: float = 0.015
    max_rows: int = Field(2000, ge=2)   # a side; mmd's kernel matrix is (2 * max_rows)^2 floats
    min_rows: int = Field(30, ge=2)
    seed: int = 0
    columns: tuple[str, ...] = DEFAULT_COLUMNS


Mode = Literal["enforce", "report", "off"]
CHECKS = ("validation", "floors", "champion", "data_drift", "embedding_drift", "synthetic_vs_real", "prediction_drift")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Floors(_Strict):
    accuracy: float = Field(0.6, ge=0, le=1)
    macro_f1: float = Field(0.55, ge=0, le=1)
    auroc: float = Field(0.6, ge=0, le=1)
    class_f1: float = Field(0.3, ge=0, le=1)   # every class: below this the class has collapsed


class GateConfig(_Strict):
    primary_metric: Literal["macro_f1", "accuracy", "auroc"] = "macro_f1"
    min_delta: float = 0.0                      # challenger >= champion + min_delta
    max_class_f1_drop: float = Field(0.05, ge=0, le=1)
    min_holdout: int = Field(20, ge=1)          # fewer labelled holdout items: accuracy checks cannot run
    min_pass_rate: float = Field(0.9, ge=0, le=1)
    floors: Floors = Floors()
    drift: DriftConfig = DriftConfig()
    checks: dict[str, Mode] = Field(default_factory=lambda: {name: "enforce" for name in CHECKS})
    promote: bool = True                        # false: decide and report, leave the champion alone

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, Mode]) -> dict[str, Mode]:
        unknown = sorted(set(value) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown checks {unknown}: the gate's checks are {', '.join(CHECKS)}")
        return value

    def mode(self, check: str) -> Mode:
        return self.checks.get(check, "enforce")
