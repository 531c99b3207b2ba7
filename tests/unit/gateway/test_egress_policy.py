"""Egress lists: parsing, the ceiling, and which resolved addresses may be dialled."""

from __future__ import annotations

import ipaddress

import pytest

from sandbox_gateway.egress.policy import (
    AllowList,
    EgressRefused,
    dialable,
    parse,
    resolve_overrides,
    session_list,
)

pytestmark = pytest.mark.unit
SETTING = "the session's list"

CEILING = parse(
    "pypi.org, *.pythonhosted.org, api.example.com:8443", setting="SANDBOX_EGRESS_ALLOW"
)


def test_the_syntax() -> None:
    assert str(CEILING) == "api.example.com:8443,pypi.org,*.pythonhosted.org"
    assert CEILING.allows("pypi.org", 443) and CEILING.allows("PyPI.org.", 80)
    assert not CEILING.allows("pypi.org", 8080)
    assert CEILING.allows("files.pythonhosted.org", 443)
    assert CEILING.allows("a.b.pythonhosted.org", 80)
    assert not CEILING.allows("pythonhosted.org", 443)  # a wildcard is not its apex
    assert not CEILING.allows("evilpythonhosted.org", 443)
    assert not CEILING.allows("pypi.org.evil.com", 443)
    assert CEILING.allows("api.example.com", 8443) and not CEILING.allows("api.example.com", 443)
    assert CEILING.names("api.example.com") and not CEILING.names("example.com")
    assert parse("a.com:80,a.com:443", setting="X") == parse("a.com", setting="X")
    assert not parse(" , ", setting="X")


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4",
        "[::1]",
        "::1",
        "*",
        "*.com.*",
        "a.*.com",
        "pypi",
        "-a.com",
        "a_b.com",
        "a.com:0",
        "a.com:99999",
        "a.com:x",
        "a.com:1:2",
        "a..com",
        "*.1.2.3",
        "a.com/path",
        "http://a.com",
    ],
)
def test_what_is_not_a_pattern_is_refused_with_the_entry(text: str) -> None:
    with pytest.raises(EgressRefused, match=SETTING):
        parse(text, setting=SETTING)


@pytest.mark.parametrize(
    "wanted",
    [
        "pypi.org",
        "pypi.org:443",
        "files.pythonhosted.org",
        "*.pythonhosted.org",
        "*.x.pythonhosted.org:80",
        "api.example.com:8443",
        "",
    ],
)
def test_a_session_gets_what_it_asks_for_within_the_ceiling(wanted: str) -> None:
    granted = session_list(wanted, CEILING, setting=SETTING)
    assert granted == parse(wanted, setting="X")  # exactly that, never the whole ceiling


@pytest.mark.parametrize(
    ("wanted", "named"),
    [
        ("evil.com", "evil.com:443"),
        ("pypi.org:8080", "pypi.org:8080"),
        ("pythonhosted.org", "pythonhosted.org:443"),
        ("*.evil.org", r"\*.evil.org:443"),
        ("api.example.com", "api.example.com:443"),
        ("pypi.org,evil.com", "evil.com:443"),
    ],
)
def test_an_entry_outside_the_ceiling_refuses_the_start(wanted: str, named: str) -> None:
    with pytest.raises(EgressRefused, match=f"{named} is not within"):
        session_list(wanted, CEILING, setting=SETTING)


def test_no_ceiling_allows_nothing() -> None:
    assert not session_list("", AllowList(), setting=SETTING)
    with pytest.raises(EgressRefused, match="allows no egress"):
        session_list("pypi.org", AllowList(), setting=SETTING)


def test_static_resolutions() -> None:
    table = resolve_overrides(
        "mirror.internal=10.0.0.5, mirror.internal=fd00::5,b.test=172.17.0.2", setting="static"
    )
    assert table == {"mirror.internal": ("10.0.0.5", "fd00::5"), "b.test": ("172.17.0.2",)}
    for bad in ("mirror.internal", "mirror.internal=nope", "=1.2.3.4", "1.2.3.4=1.2.3.4"):
        with pytest.raises(EgressRefused, match="SANDBOX_EGRESS_RESOLVE"):
            resolve_overrides(bad, setting="SANDBOX_EGRESS_RESOLVE")


PLATFORM = [ipaddress.ip_network("10.213.0.0/16"), ipaddress.ip_network("fd12::/64")]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.17.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "ff02::1",
        "::",
    ],
)
def test_addresses_that_are_never_dialled(address: str) -> None:
    assert not dialable(address, PLATFORM)


def test_global_addresses_are_dialled_unless_the_platform_s() -> None:
    assert dialable("151.101.0.223", PLATFORM)
    assert dialable("2a04:4e42::223", PLATFORM)
    platform_global = [ipaddress.ip_network("151.101.0.0/16")]
    assert not dialable("151.101.0.223", platform_global)
