"""Modelgate benchmarks: `make bench` (or `.venv/bin/python bench/run.py --help`)."""
