"""The gateway's half of egress (``sandbox_gateway.egress.gateway``): which start requests are
refused and why, and the table of grants it sends.  The egress process itself is tested in
tests/integration/egress, the whole in tests/e2e/docker/test_egress.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sandbox_gateway.egress.gateway import (
    EgressSettings,
    EgressUnavailable,
    GrantPublisher,
    SettingsError,
    grant_table,
    refusal,
)

ON = {
    "SANDBOX_EGRESS_ALLOW": "pypi.org,*.pythonhosted.org,api.example.org:8443",
    "SANDBOX_EGRESS_URL": "http://egress:8900",
    "SANDBOX_EGRESS_CONTROL_TOKEN": "t" * 32,
}


def settings(**changes: str) -> EgressSettings:
    return EgressSettings.from_env({**ON, **changes})


def test_a_list_within_the_ceiling_passes() -> None:
    for asked in ("pypi.org", "files.pythonhosted.org,pypi.org", "api.example.org:8443", " "):
        assert refusal({"KERNEL_EGRESS_ALLOW": asked}, settings()) is None
    assert refusal({}, settings()) is None


@pytest.mark.parametrize(
    "asked, said",
    [
        ("evil.example", "evil.example:443 is not within"),
        ("pypi.org:22", "pypi.org:22 is not within"),
        ("api.example.org", "api.example.org:443 is not within"),  # only :8443 is
        ("pythonhosted.org", "pythonhosted.org:443"),  # the wildcard is below it only
        ("*.example.org", "*.example.org:443"),
        ("10.0.0.1", "is an address"),
        ("*", "not a host name"),
    ],
)
def test_a_list_beyond_the_ceiling_is_refused_with_its_reason(asked: str, said: str) -> None:
    body = refusal({"KERNEL_EGRESS_ALLOW": asked}, settings())
    assert body is not None and said in body["message"]
    assert body["egress_refused"] == {"requested": asked, "ceiling": str(settings().ceiling)}


def test_without_an_egress_process_or_a_ceiling_every_list_is_refused() -> None:
    body = refusal({"KERNEL_EGRESS_ALLOW": "pypi.org"}, settings(SANDBOX_EGRESS_URL=""))
    assert body is not None and "no egress process" in body["message"]
    body = refusal({"KERNEL_EGRESS_ALLOW": "pypi.org"}, settings(SANDBOX_EGRESS_ALLOW=""))
    assert body is not None and "allows no egress" in body["message"]
    assert not settings(SANDBOX_EGRESS_ALLOW="").enabled and settings().enabled


@pytest.mark.parametrize(
    "name, value, said",
    [
        ("SANDBOX_EGRESS_ALLOW", "10.0.0.0/8", "SANDBOX_EGRESS_ALLOW"),
        ("SANDBOX_EGRESS_URL", "egress:8900", "http(s) URL"),
        ("SANDBOX_EGRESS_CONTROL_TOKEN", "short", "16 characters"),
        ("SANDBOX_EGRESS_ANSWER", "egress_svc!", "IP address or a host name"),
        ("SANDBOX_EGRESS_RESEND", "0", "SANDBOX_EGRESS_RESEND"),
        ("SANDBOX_EGRESS_RESEND", "soon", "SANDBOX_EGRESS_RESEND"),
    ],
)
def test_a_wrong_setting_stops_the_gateway_saying_which(name: str, value: str, said: str) -> None:
    with pytest.raises(SettingsError, match=said.replace("(", r"\(").replace(")", r"\)")):
        settings(**{name: value})


def test_the_table_answers_each_kernel_with_the_egress_address_on_its_own_network() -> None:
    table = grant_table(
        [
            ("k1", "10.213.4.18", "pypi.org"),
            ("k2", None, "pypi.org"),  # still starting: no address yet
            ("k3", "10.213.9.2", ""),
        ],
    )
    assert table == {"10.213.4.18": {"session": "k1", "allow": "pypi.org", "answer": "10.213.4.30"}}
    fixed = grant_table([("k1", "10.42.0.7", "pypi.org")], "10.96.0.53")
    assert fixed["10.42.0.7"]["answer"] == "10.96.0.53"


class Kernels:
    """The two calls of Enterprise Gateway's kernel manager the publisher makes."""

    def __init__(self, addresses: dict[str, str | None]) -> None:
        self.addresses = addresses

    def list_kernel_ids(self) -> list[str]:
        return list(self.addresses)

    def get_kernel(self, kernel_id: str) -> Any:
        class Proxy:
            assigned_ip = self.addresses[kernel_id]

        class Manager:
            process_proxy = Proxy()

        return Manager()


def test_a_start_waits_for_the_table_when_it_has_a_list_or_its_address_was_another_s() -> None:
    publisher = GrantPublisher(
        settings(), Kernels({"old": None, "new": "10.213.4.18", "k": "10.213.5.2"})
    )
    publisher.lists["old"] = "pypi.org"
    publisher.sent = {"10.213.4.18": "old"}  # the egress process still grants it to "old"
    assert publisher.needs_sync("new")
    assert not publisher.needs_sync("k")
    publisher.lists["k"] = "pypi.org"
    assert publisher.needs_sync("k")
    # A kernel gone from the gateway is in no table, whatever its list.
    assert publisher.table() == {
        "10.213.5.2": {"session": "k", "allow": "pypi.org", "answer": "10.213.5.14"}
    }


def test_an_answer_that_names_the_egress_service_is_resolved_and_kept_when_dns_fails() -> None:
    publisher = GrantPublisher(
        settings(SANDBOX_EGRESS_ANSWER="localhost"), Kernels({"k": "10.42.0.7"})
    )
    publisher.lists["k"] = "pypi.org"
    asyncio.run(publisher.resolve_answer())
    assert publisher.table()["10.42.0.7"]["answer"] == "127.0.0.1"
    publisher.settings = settings(SANDBOX_EGRESS_ANSWER="nowhere.invalid")
    asyncio.run(publisher.resolve_answer())  # a failed lookup keeps the address kernels were given
    assert publisher.answer == "127.0.0.1"
    fresh = GrantPublisher(settings(SANDBOX_EGRESS_ANSWER="nowhere.invalid"), Kernels({}))
    with pytest.raises(EgressUnavailable, match=r"nowhere\.invalid"):
        asyncio.run(fresh.resolve_answer())
