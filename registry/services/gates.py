"""Automated checks a version must pass to enter an environment.

Evaluated when a promotion is requested and again right before it executes. Every
environment applies the scan gate, whether or not its policy lists it: only a `clean`
scan passes, or an `unverified` one whose every finding is a global the environment's
audited `allowed_globals` names.

`healthy_in` is fed by monitoring: the candidate version's own aggregated traffic in
another environment (e.g. staging) and the model's firing alerts there. A blocked promotion
is final; asking again (a new request) evaluates every gate afresh, and an approved one is
re-checked right before its alias moves, so a version whose staging alerts start firing
after approval is still stopped.
"""

import operator
import re
from typing import Any

from registry.errors import InvalidInput
from registry.models import ALIAS_PATTERN, Alias, Environment, ModelVersion

OPS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
GATE_TYPES = {
    "scan_clean",
    "package_ready",
    "checksums_verified",
    "metric",
    "metric_not_worse",
    "signature_compatible",
    "healthy_in",
}
HEALTHY_IN_FIELDS = {"type", "environment", "min_requests", "max_error_rate", "no_firing_alerts"}
LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "latency", "perplexity")


def validate_gates(gates: Any) -> list[dict]:
    """The shape of an environment's gate list; raises InvalidInput with the bad entry."""
    if not isinstance(gates, list):
        raise InvalidInput("'gates' must be a list of objects with a 'type'.")
    for index, gate in enumerate(gates):
        if not isinstance(gate, dict) or gate.get("type") not in GATE_TYPES:
            raise InvalidInput(
                f"gates[{index}] needs a 'type' among {', '.join(sorted(GATE_TYPES))}.",
                {"index": index},
            )
        if gate["type"] == "metric" and (
            not isinstance(gate.get("metric"), str)
            or gate.get("op") not in OPS
            or isinstance(gate.get("value"), bool)
            or not isinstance(gate.get("value"), int | float)
        ):
            raise InvalidInput(
                f"gates[{index}]: a metric gate needs 'metric', 'op' "
                f"({' '.join(OPS)}) and a numeric 'value'.",
                {"index": index},
            )
        if (
            gate["type"] == "metric_not_worse"
            and gate.get("metric") is not None
            and not isinstance(gate["metric"], str)
        ):
            raise InvalidInput(f"gates[{index}]: 'metric' must be a string.", {"index": index})
        if gate["type"] == "healthy_in":
            _validate_healthy_in(gate, index)
    return gates


# "module.name" with identifier parts, as a pickle's GLOBAL names it.
_GLOBAL_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
MAX_ALLOWED_GLOBALS = 200


def validate_allowed_globals(names: Any) -> list[str]:
    """An environment's extra allowed pickle globals: a list of "module.name" strings."""
    if not isinstance(names, list) or len(names) > MAX_ALLOWED_GLOBALS:
        raise InvalidInput(
            f"'allowed_globals' must be a list of at most {MAX_ALLOWED_GLOBALS} "
            "'module.name' strings."
        )
    for index, name in enumerate(names):
        if not isinstance(name, str) or not _GLOBAL_NAME.fullmatch(name):
            raise InvalidInput(
                f"allowed_globals[{index}] must be a global as 'module.name', e.g. "
                "'mypackage.features.Scaler'.",
                {"index": index},
            )
    return sorted(set(names))


def _validate_healthy_in(gate: dict, index: int) -> None:
    def bad(message: str):
        return InvalidInput(f"gates[{index}]: {message}", {"index": index})

    unknown = set(gate) - HEALTHY_IN_FIELDS
    if unknown:
        raise bad(f"unknown fields {', '.join(sorted(map(str, unknown)))} in a healthy_in gate.")
    environment = gate.get("environment")
    if not isinstance(environment, str) or not re.fullmatch(ALIAS_PATTERN, environment):
        raise bad("a healthy_in gate needs the 'environment' whose traffic counts.")
    requests = gate.get("min_requests", 0)
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        raise bad("'min_requests' must be a whole number, 0 or more.")
    rate = gate.get("max_error_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
    ):
        raise bad("'max_error_rate' must be a number from 0 to 1.")
    if not isinstance(gate.get("no_firing_alerts", False), bool):
        raise bad("'no_firing_alerts' must be true or false.")


def live_version(model_id: int, environment: Environment) -> ModelVersion | None:
    alias = (
        Alias.objects.filter(model_id=model_id, name=environment.name)
        .select_related("version")
        .first()
    )
    return alias.version if alias else None


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in LOWER_IS_BETTER)


def _result(gate: dict, passed: bool, detail: str) -> dict:
    return {
        "type": gate["type"],
        "passed": passed,
        "detail": detail,
        **{k: v for k, v in gate.items() if k != "type"},
    }


def _scan_clean(version, gate, live):
    """Only `clean` passes, or `unverified` when every finding is a pickle global that the
    environment's own audited allow-list names (passed in as `allowed_globals`)."""
    status = version.scan_status or "not scanned"
    if status == "clean":
        return _result(gate, True, "scan is clean")
    findings = version.scan_findings or []
    allowed = set(gate.get("allowed_globals") or ())
    if status == "unverified" and allowed and findings:
        names = {_global_name(f) for f in findings}
        if None not in names and names <= allowed:
            shown = ", ".join(sorted(names)[:5])
            return _result(gate, True, f"scan is unverified only by globals allowed here: {shown}")
    worst = [f for f in findings if f.get("severity") == "unsafe"] or findings
    named = sorted({_shown(f) for f in worst})[:5]
    return _result(gate, False, f"scan is {status}" + (f": {'; '.join(named)}" if named else ""))


def _shown(finding: dict) -> str:
    if finding.get("module"):
        return f"{finding['module']}.{finding['name']}"
    return str(finding.get("detail", ""))


def _global_name(finding: dict) -> str | None:
    """ "module.name" of a finding about an unlisted pickle global; None for other findings."""
    if finding.get("severity") != "unverified" or not finding.get("module"):
        return None
    return f"{finding['module']}.{finding['name']}"


def _package_ready(version, gate, live):
    ok = version.package_state == "ready"
    return _result(gate, ok, "package built" if ok else f"package is {version.package_state}")


def _checksums_verified(version, gate, live):
    ok = version.pipeline.get("verify") == "done"
    return _result(
        gate, ok, "every file re-hashed from the store" if ok else "files not verified yet"
    )


def _metric(version, gate, live):
    name, op, bound = gate["metric"], gate["op"], gate["value"]
    value = version.metrics.get(name)
    if value is None:
        return _result(gate, False, f"metric {name} is missing")
    ok = OPS[op](value, bound)
    return _result(gate, ok, f"{name} = {value:g} {'meets' if ok else 'fails'} {op} {bound:g}")


def _metric_not_worse(version, gate, live):
    name = gate.get("metric") or version.model.primary_metric or next(iter(version.metrics), "")
    value = version.metrics.get(name)
    if not name or value is None:
        return _result(gate, False, f"metric {name or '(primary)'} is missing")
    if live is None or live.pk == version.pk:
        return _result(gate, True, f"{name} = {value:g}; nothing live to compare with")
    current = live.metrics.get(name)
    if current is None:
        return _result(gate, True, f"{name} = {value:g}; live version {live.number} has none")
    lower = gate.get("higher_is_better") is False or (
        "higher_is_better" not in gate and lower_is_better(name)
    )
    ok = value <= current if lower else value >= current
    word = "not worse than" if ok else "worse than"
    return _result(
        gate, ok, f"{name} = {value:g} is {word} live version {live.number} ({current:g})"
    )


def _signature_compatible(version, gate, live):
    if live is None or not live.signature:
        return _result(gate, True, "no live signature to compare with")
    if not version.signature:
        return _result(gate, False, f"live version {live.number} has a signature; this has none")
    wanted = {i.get("name"): i.get("type") for i in live.signature.get("inputs", [])}
    have = {i.get("name"): i.get("type") for i in version.signature.get("inputs", [])}
    missing = [n for n in wanted if n not in have]
    changed = [n for n in wanted if n in have and have[n] != wanted[n]]
    ok = not missing and not changed
    detail = (
        "inputs compatible with the live version"
        if ok
        else (
            f"missing inputs: {', '.join(map(str, missing)) or '-'}; "
            f"changed types: {', '.join(map(str, changed)) or '-'}"
        )
    )
    return _result(gate, ok, detail)


def _healthy_in(version, gate, live):
    from .monitoring import query  # monitoring reads the registry, not the other way round

    environment = gate["environment"]
    wanted = gate.get("min_requests", 0)
    where = Environment.objects.filter(name=environment).first()
    served = (
        query.vouched_traffic(version, where)
        if where is not None
        else {"requests": 0, "errors": 0, "tokens": [], "uncounted_requests": 0}
    )
    requests, errors = served["requests"], served["errors"]
    vouchers = ", ".join(f"#{t['id']} '{t['name']}' ({t['user']})" for t in served["tokens"])
    problems = []
    evidence = [
        f"served {requests} of {wanted} requests in {environment}"
        + (f", reported by ingest tokens {vouchers}" if vouchers else "")
    ]
    if served["uncounted_requests"]:
        evidence.append(
            f"{served['uncounted_requests']} requests not counted: their ingest tokens are not "
            f"bound to {environment} by an admin or its deploy group"
        )
    if requests < wanted:
        problems.append("too little traffic")
    rate = errors / requests if requests else None
    limit = gate.get("max_error_rate")
    if rate is None:
        evidence.append("no error rate yet")
    else:
        bound = f" (max {limit:.2%})" if limit is not None else ""
        evidence.append(f"error rate {rate:.2%}{bound}")
        if limit is not None and rate > limit:
            problems.append("error rate too high")
    if gate.get("no_firing_alerts"):
        alerts = list(query.firing_alerts(model=version.model.name, environment=environment))
        if alerts:
            named = "; ".join(
                f"{a.monitor.metric} {a.monitor.op} {a.monitor.value:g} (value "
                f"{'none' if a.value is None else f'{a.value:.4g}'})"
                for a in alerts[:3]
            )
            evidence.append(f"{len(alerts)} alert{'s' * (len(alerts) > 1)} firing: {named}")
            problems.append("alerts firing")
        else:
            evidence.append("no alerts firing")
    result = _result(gate, not problems, "; ".join(evidence))
    result.update(requests=requests, errors=errors, error_rate=rate, tokens=served["tokens"])
    return result


CHECKS = {
    "scan_clean": _scan_clean,
    "package_ready": _package_ready,
    "checksums_verified": _checksums_verified,
    "metric": _metric,
    "metric_not_worse": _metric_not_worse,
    "signature_compatible": _signature_compatible,
    "healthy_in": _healthy_in,
}


def evaluate(version: ModelVersion, environment: Environment) -> list[dict]:
    gates = list(environment.gates)
    if not any(g.get("type") == "scan_clean" for g in gates):
        gates.insert(0, {"type": "scan_clean", "implicit": True})
    # The environment's field is the only allow-list that counts, whatever a gate says.
    allowed = list(environment.allowed_globals or [])
    gates = [{**g, "allowed_globals": allowed} if g["type"] == "scan_clean" else g for g in gates]
    live = live_version(version.model_id, environment)
    return [CHECKS[gate["type"]](version, gate, live) for gate in gates]
