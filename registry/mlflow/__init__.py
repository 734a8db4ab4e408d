"""The MLflow Model Registry REST API subset, served from the same services as the native API."""
