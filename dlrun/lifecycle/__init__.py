"""Runs live on: list, score, use and re-run a recorded run from its MLflow run id."""
