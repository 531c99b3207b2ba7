"""Settings validation and dependency injection, in process (no server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fileserver.app import create_app
from fileserver.settings import Settings, describe_invalid, get_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        "SHARED_DATA_DIR",
        "FILE_SERVER_TOKEN",
        "FILE_SERVER_AUTH_DISABLED",
        "FILE_SERVER_MAX_UPLOAD_BYTES",
        "FILE_SERVER_ALLOWED_HOSTS",
        "SANDBOX_ALLOWED_HOSTS",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHARED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FILE_SERVER_TOKEN", "env-token")
    monkeypatch.setenv("FILE_SERVER_MAX_UPLOAD_BYTES", "12345")
    settings = Settings()
    assert settings.shared_data_dir == tmp_path
    assert settings.token is not None and settings.token.get_secret_value() == "env-token"
    assert settings.max_upload_bytes == 12345
    assert "env-token" not in repr(settings)


def test_defaults() -> None:
    settings = Settings(token="t")
    assert settings.shared_data_dir == Path("/data/shared")
    assert settings.auth_disabled is False
    assert settings.host_allow_list == {"localhost", "127.0.0.1", "[::1]", "fileserver"}


def test_allowed_hosts_from_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILE_SERVER_ALLOWED_HOSTS", " Files.Example.org ,[2001:DB8:0::1],")
    monkeypatch.setenv("SANDBOX_ALLOWED_HOSTS", "sandbox.example.org., .SVC.cluster.local")
    settings = Settings(token="t")
    assert settings.host_allow_list == {
        "localhost",
        "127.0.0.1",
        "[::1]",
        "fileserver",
        "files.example.org",
        "[2001:db8::1]",
        "sandbox.example.org",
        ".svc.cluster.local",
    }


@pytest.mark.parametrize(
    "entry",
    [
        "files.example.org:8080",
        "*",
        "*.example.org",
        "https://files.example.org",
        "a/b",
        "::1",
        ".",
        ".0.5",
    ],
)
@pytest.mark.parametrize("variable", ["FILE_SERVER_ALLOWED_HOSTS", "SANDBOX_ALLOWED_HOSTS"])
def test_allowed_hosts_refuse_what_is_not_a_bare_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, entry: str
) -> None:
    monkeypatch.setenv(variable, f"ok.example.org,{entry}")
    with pytest.raises(ValidationError) as exc:
        Settings(token="t")
    assert "is not a host name, IP literal or .domain" in describe_invalid(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "FILE_SERVER_TOKEN is not set"),
        ({"token": ""}, "FILE_SERVER_TOKEN is not set"),
        ({"token": "s3cr3t-with-newline\n"}, "without whitespace"),
        ({"token": "s3cr3t-value", "auth_disabled": True}, "both set"),
        ({"token": "t", "max_upload_bytes": 0}, "greater than 0"),
    ],
)
def test_invalid_settings_are_refused_without_echoing_secrets(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(**kwargs)  # type: ignore[arg-type]
    text = describe_invalid(exc.value)
    assert message in text
    assert "s3cr3t" not in text


def test_auth_disabled_needs_no_token() -> None:
    assert Settings(auth_disabled=True).token is None


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILE_SERVER_TOKEN", "cached")
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


async def test_routes_and_startup_use_the_given_settings(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hi")
    # The Host allow-list reads the given settings too: "test" is allowed only there.
    app = create_app(
        Settings(shared_data_dir=tmp_path, token="override-token", allowed_hosts="test")
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        assert (await client.get("/files/hello.txt")).status_code == 401
        ok = await client.get(
            "/files/hello.txt", headers={"Authorization": "Bearer override-token"}
        )
        assert (ok.status_code, ok.content) == (200, b"hi")


async def test_startup_fails_on_invalid_given_settings(tmp_path: Path) -> None:
    app = create_app(Settings(shared_data_dir=tmp_path / "missing", token="t"))
    with pytest.raises(RuntimeError, match="not an existing directory"):
        async with app.router.lifespan_context(app):
            pass
