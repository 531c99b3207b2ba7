"""``mini-sandbox status``: whether the gateway, the notebook and the file server answer, and
what the gateway says of its kernels, limits and warm pool.

The gateway's ``GET /api/sandbox/status`` (docs/gateway.md) gives the figures; a stock
Enterprise Gateway answers it 404, and then only ``GET /api`` (its version) is known.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, Final

import click

from ._app import App, pass_app
from ._errors import HINT_UP, CliError, Exit
from ._output import print_json, table

if TYPE_CHECKING:
    import requests

PROBE_TIMEOUT: Final = 5.0
STATUS_ROUTE: Final = "/api/sandbox/status"
UP, DOWN, REFUSED, FAILING = "up", "down", "refused", "failing"


@click.command(short_help="Whether the services answer; kernels, limits and pool.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Probe the gateway, the notebook and the file server; show versions, your kernels
    against the limits and the warm pool's fill.  Exits 3 if a service does not answer, 4 if
    the gateway refuses the token.

    \b
    Examples:
      mini-sandbox status
      mini-sandbox status --json | jq .gateway.kernels
    """
    import requests

    s = app.settings
    with requests.Session() as http, concurrent.futures.ThreadPoolExecutor(3) as pool:
        gateway = pool.submit(_gateway, http, app)
        notebook = pool.submit(_version_of, http, s.notebook_url, "/api", "version")
        file_server = pool.submit(_file_server, http, s.file_server_url)
        report = {
            "gateway": gateway.result(),
            "notebook": notebook.result(),
            "file_server": file_server.result(),
        }
    if as_json:
        print_json(report)
    else:
        click.echo(_render(report))
    states = [probe["state"] for probe in report.values()]
    if DOWN in states or FAILING in states:
        down = [name.replace("_", " ") for name, p in report.items() if p["state"] != UP]
        raise CliError(f"not answering: {', '.join(down)}: {HINT_UP}", Exit.CONNECT)
    if report["gateway"]["state"] == REFUSED:
        raise CliError(f"the gateway refused the token: {app.gateway.token_hint}", Exit.REFUSED)


def _probe(url: str) -> dict[str, Any]:
    return {"url": url, "state": DOWN, "error": None, "version": None}


def _get(
    http: requests.Session, url: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response | str:
    """The response, or why there is none."""
    import requests

    try:
        return http.get(url, headers=headers, timeout=PROBE_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _answered(probe: dict[str, Any], response: requests.Response | str) -> bool:
    """Record a failed probe; whether ``response`` is a success."""
    if isinstance(response, str):
        probe["error"] = response
        return False
    if response.status_code in (401, 403):
        probe["state"], probe["error"] = REFUSED, f"HTTP {response.status_code}"
        return False
    if response.status_code >= 400:
        probe["state"], probe["error"] = FAILING, f"HTTP {response.status_code}"
        return False
    probe["state"] = UP
    return True


def _version_of(http: requests.Session, base: str, path: str, key: str) -> dict[str, Any]:
    probe = _probe(base)
    response = _get(http, base + path)
    if _answered(probe, response):
        assert not isinstance(response, str)
        probe["version"] = _json(response).get(key)
    return probe


def _file_server(http: requests.Session, base: str) -> dict[str, Any]:
    probe = _probe(base)
    if _answered(probe, _get(http, base + "/health")):
        # The version is in the OpenAPI document, which, like /health, needs no token.
        schema = _get(http, base + "/openapi.json")
        if not isinstance(schema, str) and schema.ok:
            probe["version"] = _json(schema).get("info", {}).get("version")
    return probe


def _gateway(http: requests.Session, app: App) -> dict[str, Any]:
    config = app.gateway_config()
    probe = {
        **_probe(config.gateway_http),
        "enterprise_gateway": None,
        "tenant": None,
        "kernels": None,
        "pool": None,
    }
    url = config.gateway_http + STATUS_ROUTE
    response = _get(http, url, config.headers, params={"username": config.username})
    if not isinstance(response, str) and response.status_code == 404:
        # A stock Enterprise Gateway: its version only; kernels and pool are unknown.
        api = _get(http, config.gateway_http + "/api", config.headers)
        if _answered(probe, api):
            assert not isinstance(api, str)
            probe["enterprise_gateway"] = _json(api).get("gateway_version")
            probe["note"] = f"no {STATUS_ROUTE}: a stock gateway; kernels and pool unknown"
        return probe
    if _answered(probe, response):
        assert not isinstance(response, str)
        body = _json(response)
        for key in ("version", "enterprise_gateway", "tenant", "kernels", "pool"):
            probe[key] = body.get(key)
    return probe


def _render(report: dict[str, Any]) -> str:
    rows = [
        {
            "service": name.replace("_", " "),
            "url": probe["url"],
            "state": probe["state"],
            "version": probe.get("version"),
            "detail": probe.get("error") or probe.get("note"),
        }
        for name, probe in report.items()
    ]
    gateway = report["gateway"]
    if gateway.get("enterprise_gateway"):
        rows[0]["detail"] = (
            rows[0]["detail"] or f"Enterprise Gateway {gateway['enterprise_gateway']}"
        )
    columns = (
        ("service", "SERVICE"),
        ("url", "URL"),
        ("state", "STATE"),
        ("version", "VERSION"),
        ("detail", "DETAIL"),
    )
    lines = [table(rows, columns)]
    kernels = gateway.get("kernels")
    if isinstance(kernels, dict):
        lines.append("")
        tenant = gateway.get("tenant")
        lines.append(
            f"kernels: yours {kernels.get('yours')} of {_limit(kernels.get('yours_limit'))}"
            + (f" (tenant {tenant})" if tenant else "")
            + f", total {kernels.get('total')} of {_limit(kernels.get('total_limit'))}"
        )
    pool = gateway.get("pool")
    if isinstance(pool, dict):
        fill = ", ".join(
            f"{name} {entry.get('ready')}/{entry.get('target')} ready"
            for name, entry in pool.items()
            if isinstance(entry, dict)
        )
        lines.append(f"warm pool: {fill or 'none'}")
    return "\n".join(lines)


def _limit(value: Any) -> str:
    return "unlimited" if value is None else str(value)
