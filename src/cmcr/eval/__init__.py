"""Evaluation: metrics (pure functions), task protocols and dataset readers."""
