"""quarry.dags."""
