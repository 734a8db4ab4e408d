"""Python client and `modelgate` CLI for the Modelgate REST API; no Django needed."""

from .api import Client, ClientError, LocalFile, scan_directory, split_ref

__all__ = ["Client", "ClientError", "LocalFile", "scan_directory", "split_ref"]
