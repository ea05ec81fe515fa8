"""Validation with Great Expectations, and the quarantine of rows that fail it."""

from mmd.validate.run import ValidationFailed, ValidationResult, run_validate

__all__ = ["ValidationFailed", "ValidationResult", "run_validate"]
