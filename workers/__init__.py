"""Celery app and task wrappers; the work itself is in registry.services."""
