"""Evaluation: full-ranking accuracy metrics."""
