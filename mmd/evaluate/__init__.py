"""Evaluation: classification metrics and calibration (metrics.py); drift and gates build on them."""
