"""Business rules. Every door (REST API, web UI, workers, MLflow layer) calls these."""
