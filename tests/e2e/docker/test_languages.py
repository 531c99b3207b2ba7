"""Every language's kernel through the unchanged client: state, output, errors, a timeout that
interrupts, displays, the shared volume, a warm start, and the box (test_isolation and
test_containment run their probes in these kernels too)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jupyter_kernel_client import ExecutionTimeoutError, GatewayKernelSession
from testkit.languages import LANGUAGES, Language

from .conftest import Stack, docker
from .test_cli import mini_sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=sorted(LANGUAGES))
def language(request: pytest.FixtureRequest) -> Language:
    return LANGUAGES[str(request.param)]


@pytest.fixture(scope="module")
def session(stack: Stack, language: Language) -> Iterator[GatewayKernelSession]:
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        language.kernelspec,
        gateway_token=stack.gateway_token,
    ) as session:
        yield session


def test_the_gateway_offers_the_kernelspec_with_its_language(
    stack: Stack, language: Language
) -> None:
    specs = requests.get(
        f"{stack.gateway_http}/api/kernelspecs", headers=stack.auth, timeout=10
    ).json()["kernelspecs"]
    spec = specs[language.kernelspec]["spec"]
    assert spec["language"] == language.language
    assert "sandboxed container" in spec["display_name"]


def test_the_notebook_offers_the_kernel_with_its_name_and_logo(
    stack: Stack, language: Language
) -> None:
    notebook = stack.notebook_api()
    listed = notebook.get(f"{stack.notebook_url}/api/kernelspecs", timeout=30).json()
    entry = listed["kernelspecs"][language.kernelspec]
    assert entry["spec"]["language"] == language.language
    assert "sandboxed container" in entry["spec"]["display_name"]
    # The logo is the kernelspec's, fetched through the notebook from the gateway.
    logo = notebook.get(f"{stack.notebook_url}{entry['resources']['logo-svg']}", timeout=30)
    assert logo.status_code == 200 and logo.text.startswith("<svg"), logo.text[:200]


def test_state_is_kept_across_executes(session: GatewayKernelSession, language: Language) -> None:
    session.execute(language.assign).raise_for_error()
    result = session.execute(language.read).raise_for_error()
    assert result.stdout.strip() == "42"
    assert str(result) == "42"


def test_stdout_and_stderr(session: GatewayKernelSession, language: Language) -> None:
    result = session.execute(language.streams).raise_for_error()
    if language.merged_streams:
        assert result.stdout.split() == ["out", "err"] and result.stderr == ""
    else:
        assert result.stdout == "out\n" and result.stderr == "err\n"


def test_every_output_of_a_burst_of_executions_arrives(
    session: GatewayKernelSession, language: Language
) -> None:
    """Each result and stream lands in its own execution, none lost: Deno's kernel sends some
    after its idle, which the gateway holds for it (sandbox_gateway.http.ordering); without
    that, about one execution in twelve here came back empty."""
    session.execute(language.assign).raise_for_error()
    for _ in range(40):
        assert session.execute(language.read).raise_for_error().stdout.strip() == "42"
        result = session.execute(language.streams).raise_for_error()
        assert sorted((result.stdout + result.stderr).split()) == ["err", "out"]


def test_an_error_comes_back_as_the_kernels_error(
    session: GatewayKernelSession, language: Language
) -> None:
    result = session.execute(language.fails)
    assert result.status == "error" and result.error is not None
    error = result.error
    assert language.error_text in f"{error.ename} {error.evalue} {error.plain_traceback()}"
    # The session goes on.
    assert session.execute(language.read).raise_for_error().stdout.strip() == "42"


def test_a_timeout_interrupts_and_the_session_stays_usable(
    session: GatewayKernelSession, language: Language
) -> None:
    with pytest.raises(ExecutionTimeoutError):
        session.execute(language.sleeps, timeout=2)
    assert session.execute(language.read, timeout=30).raise_for_error().stdout.strip() == "42"


def test_code_the_kernel_cannot_interrupt_is_reported_not_waited_on(
    stack: Stack, language: Language
) -> None:
    if language.uninterruptible is None:
        pytest.skip(f"{language.kernelspec} interrupts all it runs")
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, language.kernelspec, gateway_token=stack.gateway_token
    ) as session:
        session.execute(language.assign).raise_for_error()
        started = time.monotonic()
        with pytest.raises(ExecutionTimeoutError) as late:
            session.execute(language.uninterruptible, timeout=1)
        assert not late.value.stopped and "still busy" in str(late.value)
        assert time.monotonic() - started < 8  # said after the grace, never waited out
        if language.wedged_by_interrupt:
            # Still busy well after the code's own end: the kernel is stuck, and says so.
            with pytest.raises(ExecutionTimeoutError) as stuck:
                session.execute(language.read, timeout=12)
            assert not stuck.value.stopped
        else:
            assert session.execute(language.read, timeout=30).stdout.strip() == "42"
    # Shutting it down frees its place; the next session works.
    with GatewayKernelSession(
        stack.gateway_http, stack.gateway_ws, language.kernelspec, gateway_token=stack.gateway_token
    ) as fresh:
        fresh.execute(language.assign).raise_for_error()
        assert fresh.execute(language.read).raise_for_error().stdout.strip() == "42"


def test_a_display_comes_back_as_png(session: GatewayKernelSession, language: Language) -> None:
    if language.display is None:
        pytest.skip(f"{language.kernelspec} has no display")
    result = session.execute(language.display).raise_for_error()
    assert result.images and result.images[0].startswith(b"\x89PNG")


def test_a_file_written_by_the_kernel_is_served_by_the_file_server(
    stack: Stack, session: GatewayKernelSession, language: Language
) -> None:
    name = f"e2e-{language.kernelspec}-{uuid.uuid4().hex[:8]}.txt"
    text = f"written by {language.kernelspec}"
    session.execute(language.write(f"/data/shared/{name}", text)).raise_for_error()
    auth = {"Authorization": f"Bearer {stack.token}"}
    served = requests.get(f"{stack.file_server_url}/files/{name}", headers=auth, timeout=10)
    assert served.status_code == 200 and served.text == text


def test_the_kernel_runs_in_its_own_container_and_network(
    stack: Stack, session: GatewayKernelSession, language: Language
) -> None:
    container = stack.kernel_container(session.kernel_id)
    assert (
        container["Config"]["Image"] == f"mini-jupyter-sandbox/kernel-{language.kernelspec}:0.1.0"
    )
    networks = set(container["NetworkSettings"]["Networks"])
    assert networks == {f"mini-jupyter-sandbox-kernel-{session.kernel_id}"}
    # What the launcher kept out of the kernel's environment.
    environment = docker("exec", container["Id"], "cat", "/proc/1/environ")
    assert "PUBLIC_KEY" in environment  # docker-init's: the container's own
    kernel_env = session.execute(
        language.python("import os, json; print(json.dumps(sorted(os.environ)))")
    )
    names = kernel_env.raise_for_error().stdout
    assert "PUBLIC_KEY" not in names and "RESPONSE_ADDRESS" not in names and "KERNEL_ID" in names


def test_a_pooled_kernel_is_claimed_warm_with_the_clients_environment(
    stack: Stack, language: Language
) -> None:
    stack.wait_pool_ready(language.kernelspec, size=1)
    before = stack.metric(
        "sandbox_kernel_starts_total", kernelspec=language.kernelspec, source="warm"
    )
    hostile = 'it\'s "quoted"; $(touch /tmp/PWNED) `x` \\ end'
    with GatewayKernelSession(
        stack.gateway_http,
        stack.gateway_ws,
        language.kernelspec,
        gateway_token=stack.gateway_token,
        launch_env={"KERNEL_PROJECT": hostile},
    ) as session:
        after = stack.metric(
            "sandbox_kernel_starts_total", kernelspec=language.kernelspec, source="warm"
        )
        assert after == before + 1
        seen = session.execute(
            language.python(
                "import os, json; print(json.dumps([os.environ.get('KERNEL_PROJECT'),"
                " os.path.exists('/tmp/PWNED')]))"
            )
        ).raise_for_error()
        assert json.loads(seen.stdout) == [hostile, False]


def test_the_command_line_runs_code_in_the_language(
    stack: Stack, language: Language, tmp_path: Path
) -> None:
    code = f"{language.assign}\n{language.read}"
    done = mini_sandbox(stack, tmp_path, "run", "--kernel", language.kernelspec, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    failed = mini_sandbox(
        stack, tmp_path, "run", "--kernel", language.kernelspec, "-c", language.fails
    )
    assert failed.returncode != 0
