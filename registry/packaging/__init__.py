"""Pure-Python packaging for model versions: metadata extraction and deployable bundles.

No Django here: the worker passes file lists and an `open_blob(sha256)` callable.
"""

from .bundle import build_package
from .extract import MONITORING_FILES, FileRef, OpenBlob, extract_metadata

__all__ = ["MONITORING_FILES", "FileRef", "OpenBlob", "build_package", "extract_metadata"]
