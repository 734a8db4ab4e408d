"""Steps that tests crossing processes take over HTTP the same way each time."""

import httpx

from .processes import wait_until


def promote_and_wait(
    client: httpx.Client,
    request_base: str,
    version: str,
    environment: str,
    author: dict[str, str],
    reviewer: dict[str, str],
    poll_base: str | None = None,
) -> str:
    """Request a promotion of `version` ('model/N'), approve it, wait until it has ended.

    Requests go to `request_base` (a server URL, or '' for the client's own base URL); the
    outcome is read from `poll_base` (another node) when given. Returns the final state.
    """
    model, number = version.split("/")
    requested = client.post(
        f"{request_base}/api/v1/models/{model}/versions/{number}/promotions/",
        json={"environment": environment, "comment": f"{version} to {environment}"},
        headers=author,
    )
    assert requested.status_code == 201 and requested.json()["state"] == "pending", requested.text
    promotion = requested.json()["id"]
    reviewed = client.post(
        f"{request_base}/api/v1/promotions/{promotion}/reviews/",
        json={"decision": "approve", "comment": "checked"},
        headers=reviewer,
    )
    assert reviewed.status_code in (200, 201), reviewed.text

    def ended():
        url = f"{request_base if poll_base is None else poll_base}/api/v1/promotions/{promotion}/"
        state = client.get(url, headers=author).json()["state"]
        return state if state in ("promoted", "failed", "rejected", "cancelled") else None

    return wait_until(ended, 120, f"promotion {promotion}")
