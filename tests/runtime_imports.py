"""Run by tests/test_runtime_only.py with a runtime-only venv's python (`python -P`, from a
directory outside the checkout): imports every module of the installed server packages
after django.setup(), then finds every third-party module any of them imports, even
lazily inside a function, and checks it is installed. Prints one JSON object.

Standard library only besides Django and the packages under test: it must run where only
`pip install .` was done.
"""

import ast
import importlib
import importlib.util
import json
import pkgutil
import sys
import traceback

PACKAGES = ("config", "registry", "webui", "workers")
# Imported lazily by code that is not on the server's path; nothing else may be missing.
DEV_ONLY = {
    "playwright": "webui/screenshots.py: `make screenshots`, a developer's tool",
    "sklearn": "load_demo fits the demo's estimators with NumPy when it is absent",
    "joblib": "load_demo, with scikit-learn",
}


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _source(info: pkgutil.ModuleInfo) -> str:
    """The module's file, found without importing it (so a failed one is read too)."""
    spec = info.module_finder.find_spec(info.name)
    return (spec.origin or "") if spec else ""


def import_all() -> tuple[dict[str, str], dict[str, str]]:
    """({module: file} of every module found, {module: error} of those failing to import)."""
    files: dict[str, str] = {}
    failed: dict[str, str] = {}

    def walk_error(name: str) -> None:  # a package that failed while walked
        failed[name] = _error(sys.exc_info()[1])

    for top in PACKAGES:
        try:
            package = importlib.import_module(top)
        except Exception as exc:
            failed[top] = _error(exc)
            continue
        files[top] = package.__file__
        for info in pkgutil.walk_packages(package.__path__, f"{top}.", onerror=walk_error):
            files[info.name] = _source(info)
            try:
                importlib.import_module(info.name)
            except BaseException as exc:  # SystemExit from a bad module counts too
                failed[info.name] = _error(exc)
    return files, failed


def third_party_imports(files: dict[str, str]) -> dict[str, set[str]]:
    """{top-level module: modules importing it} for every absolute import not ours or
    the standard library's."""
    found: dict[str, set[str]] = {}
    for name, path in files.items():
        if not path.endswith(".py"):
            continue
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in PACKAGES:
                    found.setdefault(top, set()).add(name)
    return found


def installed(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is not None
    except ValueError:  # kombu swaps its module in sys.modules for one without __spec__
        return top in sys.modules


def main() -> None:
    import django

    django.setup()
    files, failed = import_all()
    missing = {
        top: sorted(users)
        for top, users in sorted(third_party_imports(files).items())
        if top not in DEV_ONLY and not installed(top)
    }
    print(
        json.dumps(
            {
                "modules": len(files),
                "failed": failed,
                "missing": missing,
                "files": {top: files.get(top, "") for top in PACKAGES},
                "dev_only_absent": sorted(
                    top for top in DEV_ONLY if importlib.util.find_spec(top) is None
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
