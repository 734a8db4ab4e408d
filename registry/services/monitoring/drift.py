"""Drift of one feature: live counts in the baseline's own bins (or categories) against the
baseline's counts. Pure numpy/scipy, no database.

- PSI = sum((live% - base%) * ln(live% / base%)) over the baseline's bins. An empty bin would
  make it infinite, so every share is floored at PSI_EPSILON (1e-4, the usual choice) first.
- The named test, by column type and sample size: with enough live records for every bin to
  expect about five (`5 * bins`, at least 30), a chi-squared test of homogeneity
  (scipy.stats.chi2_contingency) on the 2 x k table of baseline and live counts, for numbers
  (on the quantile bins) and categories (top values plus "other") alike; with fewer, the
  Jensen-Shannon distance (scipy.spatial.distance.jensenshannon, base 2), which has no
  p-value, so only the PSI can call drift there.
- `drifted`: PSI > MODELGATE_DRIFT_PSI or p < MODELGATE_DRIFT_P_VALUE, and only once the
  window holds MODELGATE_DRIFT_MIN_SAMPLES live values (fewer say nothing reliable).
"""

import math
from typing import Any

import numpy as np
from django.conf import settings
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

PSI_EPSILON = 1e-4
OTHER = "(other)"  # the live values outside the baseline's top categories
CHI2 = "chi2_homogeneity"
JENSEN_SHANNON = "jensen_shannon"


def psi(baseline: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    base = np.maximum(baseline / max(baseline.sum(), 1), PSI_EPSILON)
    now = np.maximum(live / max(live.sum(), 1), PSI_EPSILON)
    return float(np.sum((now - base) * np.log(now / base)))


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def compare(baseline: list[int], live: list[int]) -> dict[str, Any]:
    """PSI, the test chosen for the sample size, its statistic and p-value, and `drifted`."""
    base = np.asarray(baseline, dtype=float)
    now = np.asarray(live, dtype=float)
    n = int(now.sum())
    result: dict[str, Any] = {"n": n, "psi": None, "test": None, "statistic": None}
    result.update(p_value=None, drifted=False)
    if n == 0 or base.sum() == 0:
        return result
    result["psi"] = round(psi(base, now), 6)
    # Bins empty on both sides carry no information and would break the chi-squared test.
    used = (base + now) > 0
    if n >= max(30, 5 * int(used.sum())) and used.sum() >= 2:
        statistic, p_value, _, _ = chi2_contingency(np.vstack([base[used], now[used]]))
        result.update(test=CHI2, statistic=_finite(statistic), p_value=_finite(p_value))
    else:
        distance = jensenshannon(base / base.sum(), now / n, base=2)
        result.update(test=JENSEN_SHANNON, statistic=_finite(distance))
    if n >= settings.MODELGATE_DRIFT_MIN_SAMPLES:
        p = result["p_value"]
        result["drifted"] = bool(
            result["psi"] > settings.MODELGATE_DRIFT_PSI
            or (p is not None and p < settings.MODELGATE_DRIFT_P_VALUE)
        )
    return result


# --- a profile's bins, as the aggregation needs them ---------------------------------


def numeric_bins(profile: dict) -> tuple[list[float], list[int]] | None:
    bins = profile.get("bins") or {}
    if profile.get("type") != "numeric" or not bins.get("counts"):
        return None
    return list(bins["edges"]), list(bins["counts"])


def category_bins(profile: dict) -> tuple[list[str], list[int]] | None:
    """(values, counts) of a categorical profile; the last count is the baseline's 'other'."""
    if profile.get("type") != "categorical":
        return None
    top = profile.get("top") or []
    values = [category_text(item["value"]) for item in top]
    return values, [int(item["count"]) for item in top] + [int(profile.get("other") or 0)]


def category_text(value: Any) -> str:
    """How a category is compared: as Postgres' `->>` renders it (true, 1, 1.5, text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
