"""The gateway's warm kernel pool (``sandbox_gateway.pool``) on a real gateway.

A real Enterprise Gateway 3.3 with the sandbox's config and real local kernels (the test
gateway's ``python3`` is a local ipykernel): these tests check the pool's mechanism — claims,
hiding, refills, health checks, limits, settings, shutdown.  Containment of pooled kernels in
Docker is tested in ``tests/e2e/docker``.

Local kernels run in process groups and sessions of their own (not the gateway's), so a kernel
process the gateway failed to shut down outlives ``Gateway.stop()``: the tests find kernel
processes by their connection file, ``<gateway dir>/runtime/kernel-<key>.json``, where ``key`` is
the id a pooled kernel was started with.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from jupyter_kernel_client import GatewayKernelSession
from testkit.concurrent import at_once
from testkit.gateway import Gateway, gateway_venv

POOL_SIZE = 2
STARTS = "sandbox_kernel_starts_total"
READY_TIMEOUT = 60.0  # seconds for a pool to (re)fill; a local kernel takes about one
SLOW_START = 10  # seconds the "slow" kernelspec sleeps before its kernel starts

# What a session checks in its kernel: the request's variables, in Python and in a subprocess.
PROBE = """\
import json, os, subprocess
print(json.dumps({
    "project": os.environ.get("KERNEL_PROJECT"),
    "kernel_id": os.environ.get("KERNEL_ID"),
    "user": os.environ.get("KERNEL_USERNAME"),
    "working_dir": os.environ.get("KERNEL_WORKING_DIR"),
    "cwd": os.getcwd(),
    "child": subprocess.run(
        ["sh", "-c", "echo $KERNEL_PROJECT"], capture_output=True, text=True
    ).stdout.strip(),
    "pid": os.getpid(),
    "claim_left_names": sorted(n for n in globals() if n.startswith("_sandbox")),
    "output_cache": [repr(_), repr(__), len(Out)],
}))
"""

_UUID = r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}"
_CONNECTION_FILE = re.compile(rf"kernel-({_UUID})\.json")
_SERVED = re.compile(rf"served from the pool to \S+ \(container key ({_UUID})\)")


# --- helpers -----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def holds(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` stays true for ``seconds`` (to check that something does not
    happen, e.g. a pooled kernel is not consumed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.1)
    return condition()


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """One sample of ``GET /metrics``; 0 when absent (a labelled counter appears on first use)."""
    response = requests.get(f"{gw.http}/metrics", timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain")
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def pool_kernels(gw: Gateway, state: str = "ready", spec: str = "python3") -> float:
    return metric(gw, "sandbox_pool_kernels", kernelspec=spec, state=state)


def starts(gw: Gateway, source: str, reason: str = "", spec: str = "python3") -> float:
    return metric(gw, STARTS, kernelspec=spec, source=source, reason=reason)


def wait_full(gw: Gateway, size: int = POOL_SIZE, spec: str = "python3") -> None:
    wait_until(
        lambda: pool_kernels(gw, "ready", spec) == size and pool_kernels(gw, "starting", spec) == 0,
        f"{size} ready {spec} kernels in the pool",
    )


def full_log(gw: Gateway) -> str:
    """The gateway's whole log (``Gateway.log()`` keeps only its end)."""
    return gw.log_path.read_text(errors="replace")


def kernel_processes(gw: Gateway) -> dict[str, int]:
    """The live kernel processes of ``gw``: key of the connection file -> pid."""
    home = str(gw.log_path.parent)
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # a zombie's command line is empty; a process may end meanwhile
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        match = _CONNECTION_FILE.search(command)
        if match and home in command:
            found[match.group(1)] = int(entry.name)
    return found


def pooled_processes(gw: Gateway) -> dict[str, int]:
    """Kernel processes not handed out (neither listed by the API nor served per the log)."""
    handed_out = {str(k["id"]) for k in gw.kernels()} | set(_SERVED.findall(full_log(gw)))
    return {key: pid for key, pid in kernel_processes(gw).items() if key not in handed_out}


def kill_leftovers(gw: Gateway) -> None:
    """SIGKILL kernel processes a stopped gateway left behind (tests assert on leaks)."""
    for pid in kernel_processes(gw).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway(env={"EG_UNAUTHORIZED_USERS": "nobody-in-particular", **env})
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        kill_leftovers(gw)


def session(gw: Gateway, user: str = "alice", **env: str) -> GatewayKernelSession:
    return GatewayKernelSession(gw.http, gw.ws, "python3", {"KERNEL_USERNAME": user, **env})


def start_raw(gw: Gateway, **env: str) -> requests.Response:
    body = {"name": "python3", "env": env}
    return requests.post(f"{gw.http}/api/kernels", json=body, timeout=60)


def probe(s: GatewayKernelSession) -> dict[str, Any]:
    result = s.execute(PROBE)
    assert result.ok, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def empty(gw: Gateway) -> None:
    """Shut down every handed-out kernel and wait until the gateway lists none."""
    for kernel in gw.kernels():
        requests.delete(f"{gw.http}/api/kernels/{kernel['id']}", timeout=30)
    wait_until(lambda: gw.kernels() == [], "no kernel listed", timeout=30)


# --- gateways ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUPYTER_PATH entry with kernelspecs that fail or start slowly, on purpose."""
    share = tmp_path_factory.mktemp("share")
    python = str(gateway_venv() / "bin" / "python")
    flaky = share / "bin" / "flaky-python"  # missing until a test creates it
    specs = {
        "flaky": [str(flaky), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "exits": ["/bin/false", "{connection_file}"],
        "withenvs": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "slow": [
            "/bin/sh",
            "-c",
            f'sleep {SLOW_START}; exec {python} -m ipykernel_launcher -f "$0"',
            "{connection_file}",
        ],
    }
    for name, argv in specs.items():
        (share / "kernels" / name).mkdir(parents=True)
        spec: dict[str, Any] = {"display_name": f"test: {name}", "language": "python"}
        spec["argv"] = argv
        if name == "withenvs":  # what the chart's Kubernetes kernelspecs set
            spec["env"] = {"SANDBOX_CLIENT_ENVS": "PROJECT_NAME"}
        (share / "kernels" / name / "kernel.json").write_text(json.dumps(spec))
    (share / "bin").mkdir()
    return share


@pytest.fixture(scope="module")
def pool_gateway() -> Iterator[Gateway]:
    """A pool of two python3 kernels, checked every second."""
    with running(
        {"SANDBOX_POOL": f"python3={POOL_SIZE}", "SANDBOX_POOL_CHECK_INTERVAL": "1"}
    ) as gw:
        yield gw


@pytest.fixture
def pool(pool_gateway: Gateway) -> Iterator[Gateway]:
    """The shared pool gateway, full and with no kernel handed out, before and after a test."""
    wait_full(pool_gateway)
    assert pool_gateway.kernels() == []
    yield pool_gateway
    empty(pool_gateway)


# --- claims ------------------------------------------------------------------------------------


def test_a_start_is_served_warm_with_the_requests_variables(pool: Gateway, tmp_path: Path) -> None:
    warm = starts(pool, "warm")
    env = {"KERNEL_PROJECT": "demo", "KERNEL_WORKING_DIR": str(tmp_path)}
    with session(pool, "alice", **env) as s:
        assert starts(pool, "warm") == warm + 1
        # The claim's execute was silent: the session's first cell is number 1.
        assert s.execute("pass").execution_count == 1
        seen = probe(s)
        assert seen["project"] == "demo"
        assert seen["child"] == "demo"  # in os.environ itself, so subprocesses inherit it
        assert seen["kernel_id"] == s.kernel_id
        assert seen["user"] == "alice"
        assert seen["cwd"] == str(tmp_path)
        assert seen["claim_left_names"] == []
        assert seen["output_cache"] == ["''", "''", 0]  # the pool's warm-up left nothing
    wait_full(pool)


def test_client_variables_reach_a_warm_kernel_as_a_cold_one(kernelspecs: Path) -> None:
    """A kernelspec's launcher passes its SANDBOX_CLIENT_ENVS names into the kernel (the chart's
    clientEnvs); a claim passed only KERNEL_* ones."""
    env = {"SANDBOX_POOL": "withenvs=1", "JUPYTER_PATH": str(kernelspecs)}
    with running({**env, "EG_CLIENT_ENVS": "PROJECT_NAME"}) as gw:
        wait_full(gw, 1, "withenvs")
        seen = {}
        # The second start asks for resources, which a pooled kernel cannot have: cold.
        for source, extra in (("warm", {}), ("cold", {"KERNEL_MEMORY": "256m"})):
            count = starts(gw, source, spec="withenvs", reason="" if not extra else "resources")
            request = {"KERNEL_USERNAME": "alice", "PROJECT_NAME": "demo", **extra}
            with GatewayKernelSession(gw.http, gw.ws, "withenvs", request) as s:
                seen[source] = str(s.execute("import os; os.environ.get('PROJECT_NAME')"))
            assert starts(gw, source, spec="withenvs", reason="" if not extra else "resources") == (
                count + 1
            )
        assert seen == {"warm": "'demo'", "cold": "'demo'"}


def test_a_missing_working_dir_is_ignored(pool: Gateway, tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent")
    warm = starts(pool, "warm")
    with session(pool, "alice", KERNEL_WORKING_DIR=missing) as s:
        seen = probe(s)
    assert starts(pool, "warm") == warm + 1
    assert seen["working_dir"] == missing  # passed on, as a cold start passes it
    assert seen["cwd"] != missing
    assert Path(seen["cwd"]).is_dir()


def test_the_pool_refills_to_its_size_after_claims(pool: Gateway) -> None:
    sessions = [session(pool, f"user{n}").start() for n in range(POOL_SIZE + 1)]
    try:
        wait_full(pool)
        assert len(pooled_processes(pool)) == POOL_SIZE
        assert sorted(str(k["id"]) for k in pool.kernels()) == sorted(
            str(s.kernel_id) for s in sessions
        )
    finally:
        for s in sessions:
            s.shutdown()


# --- hidden and never reused -------------------------------------------------------------------


def test_pooled_kernels_are_neither_listed_nor_reachable(pool: Gateway) -> None:
    pooled = pooled_processes(pool)
    assert len(pooled) == POOL_SIZE
    assert pool.kernels() == []
    for key in pooled:
        answer = requests.get(f"{pool.http}/api/kernels/{key}", timeout=10)
        assert answer.status_code == 404, answer.text
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"{pool.ws}/api/kernels/{key}/channels", timeout=10)
        assert refused.value.status_code == 404
    with session(pool) as s:
        assert [k["id"] for k in pool.kernels()] == [s.kernel_id]


def test_a_kernel_shut_down_is_never_served_again(pool: Gateway) -> None:
    with session(pool) as first:
        first.execute("secret = 42")
        first_id, first_pid = first.kernel_id, probe(first)["pid"]
    wait_full(pool)
    with session(pool) as second:
        assert second.kernel_id != first_id
        assert probe(second)["pid"] != first_pid
        assert second.execute("print('secret' in globals())").stdout.strip() == "False"
    assert first_id not in kernel_processes(pool)


# --- KERNEL_ID -----------------------------------------------------------------------------------


def test_a_requested_kernel_id_is_served_warm(pool: Gateway) -> None:
    kernel_id = str(uuid.uuid4())
    warm = starts(pool, "warm")
    answer = start_raw(pool, KERNEL_USERNAME="alice", KERNEL_ID=kernel_id)
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == kernel_id
    assert starts(pool, "warm") == warm + 1
    assert requests.get(f"{pool.http}/api/kernels/{kernel_id}", timeout=10).status_code == 200
    with GatewayKernelSession(pool.http, pool.ws, "python3", kernel_id=kernel_id) as s:
        assert probe(s)["kernel_id"] == kernel_id


def pool_untouched(gw: Gateway, size: int = POOL_SIZE) -> bool:
    """Whether the pool stays full, with no kernel taken, discarded or started, for a second."""
    return holds(
        lambda: pool_kernels(gw, "ready") == size and pool_kernels(gw, "starting") == 0, 1.0
    )


def test_a_kernel_id_in_use_is_409_and_keeps_the_pool(pool: Gateway) -> None:
    kernel_id = str(uuid.uuid4())
    assert start_raw(pool, KERNEL_USERNAME="alice", KERNEL_ID=kernel_id).status_code == 201
    wait_full(pool)
    warm, cold = starts(pool, "warm"), starts(pool, "cold", "kernel_id_in_use")
    duplicate = start_raw(pool, KERNEL_USERNAME="bob", KERNEL_ID=kernel_id)
    assert duplicate.status_code == 409, duplicate.text
    assert "exists or is starting" in duplicate.json()["message"]
    # Refused before the pool saw it: not counted as a start, warm or cold.
    assert (starts(pool, "warm"), starts(pool, "cold", "kernel_id_in_use")) == (warm, cold)
    assert [k["id"] for k in pool.kernels()] == [kernel_id]
    assert pool_untouched(pool)


def test_concurrent_claims_with_one_kernel_id_serve_one_kernel(pool: Gateway) -> None:
    """The pool checked the id before it awaited the claim, then overwrote the map: both
    claims got 201, two users shared one kernel and the other pooled one ran on unmapped."""
    kernel_id, attempts = str(uuid.uuid4()), 3
    answers = at_once(
        attempts, lambda n: start_raw(pool, KERNEL_USERNAME=f"user{n}", KERNEL_ID=kernel_id)
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * (attempts - 1)
    assert [k["id"] for k in pool.kernels()] == [kernel_id]
    wait_full(pool)
    # Every kernel process is either the one handed out or a pooled one: none runs unmapped.
    assert len(kernel_processes(pool)) == 1 + POOL_SIZE
    assert len(pooled_processes(pool)) == POOL_SIZE


@pytest.mark.parametrize(
    "env",
    [
        {"KERNEL_PROJECT": "a\0b"},
        {"KERNEL_A=B": "x"},
        {"KERNEL_PROJECT": "\ud800"},
        {"KERNEL_lower": "x"},
    ],
    ids=["nul-in-value", "equals-in-name", "lone-surrogate", "lower-case-kernel-name"],
)
def test_a_request_no_kernel_can_hold_is_400_and_costs_no_pooled_kernel(
    pool: Gateway, env: dict[str, str]
) -> None:
    """Such a value made the claim's ``os.environ.update`` raise in the kernel, and the pool
    discarded that kernel and tried the next: one request emptied the pool."""
    answer = start_raw(pool, KERNEL_USERNAME="mallory", **env)
    assert answer.status_code == 400, answer.text
    assert pool.kernels() == []
    assert pool_untouched(pool)
    assert "failed its claim" not in full_log(pool)


def test_unknown_kernelspec_names_never_become_metrics_labels(pool: Gateway) -> None:
    """Any client could grow /metrics without bound, and read there what other clients sent."""
    before = len(requests.get(f"{pool.http}/metrics", timeout=10).content)
    names = [f"no-such-{uuid.uuid4().hex}" + "x" * 500 for _ in range(50)]
    for name in names:
        answer = requests.post(f"{pool.http}/api/kernels", json={"name": name}, timeout=30)
        assert answer.status_code == 404, answer.text
    page = requests.get(f"{pool.http}/metrics", timeout=10).text
    assert not any(name[:40] in page for name in names)
    assert len(page.encode()) - before < 2000  # one "other" series, not one per name
    assert starts(pool, "cold", "no_such_kernelspec", spec="other") >= len(names)


# --- cold starts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "reason", "logged"),
    [
        (
            {"KERNEL_MEMORY": "256m"},
            "resources",
            "pool miss for python3: the request sets resources (KERNEL_MEMORY)",
        ),
        (
            {"KERNEL_IMAGE": "other:1"},
            "image",
            "pool miss for python3: KERNEL_IMAGE 'other:1' is not the pooled image",
        ),
    ],
)
def test_a_request_that_changes_the_container_starts_cold(
    pool: Gateway, env: dict[str, str], reason: str, logged: str
) -> None:
    cold, warm = starts(pool, "cold", reason), starts(pool, "warm")
    with session(pool, **env) as s:
        assert s.execute("print(6 * 7)").stdout.strip() == "42"
        assert s.kernel_id not in pooled_processes(pool)
    assert starts(pool, "cold", reason) == cold + 1
    assert starts(pool, "warm") == warm
    assert pool_kernels(pool, "ready") == POOL_SIZE
    assert logged in full_log(pool)


def test_an_empty_pool_degrades_to_cold_starts() -> None:
    with running({"SANDBOX_POOL": "python3=1"}) as gw:
        wait_full(gw, 1)
        outputs: list[str] = []
        errors: list[BaseException] = []

        def use(n: int) -> None:
            try:
                with session(gw, f"user{n}") as s:
                    outputs.append(s.execute(f"print({n} * 2)").stdout.strip())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=use, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(outputs) == ["0", "2", "4"]
        warm, empty_pool = starts(gw, "warm"), starts(gw, "cold", "empty")
        assert warm >= 1
        assert empty_pool >= 1
        assert warm + empty_pool == 3
        assert "pool miss for python3: the pool is empty" in full_log(gw)
        wait_full(gw, 1)


# --- limits --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway() -> Iterator[Gateway]:
    with running(
        {
            "SANDBOX_POOL": f"python3={POOL_SIZE}",
            "SANDBOX_MAX_KERNELS": "3",
            "SANDBOX_MAX_KERNELS_PER_USER": "1",
        }
    ) as gw:
        yield gw


@pytest.fixture
def limited(limited_gateway: Gateway) -> Iterator[Gateway]:
    wait_full(limited_gateway)
    assert limited_gateway.kernels() == []
    yield limited_gateway
    empty(limited_gateway)


def assert_refused(answer: requests.Response, scope: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["kernel_limit"]["scope"] == scope


def test_pooled_kernels_count_against_the_total_and_claims_pass_a_full_gateway(
    limited: Gateway,
) -> None:
    gw = limited
    # 2 pooled + 1 cold = the total of 3.
    cold = start_raw(gw, KERNEL_USERNAME="u1", KERNEL_MEMORY="256m")
    assert cold.status_code == 201, cold.text
    refused = start_raw(gw, KERNEL_USERNAME="u2", KERNEL_MEMORY="256m")
    assert_refused(refused, "total")
    assert refused.json()["kernel_limit"]["in_use"] == 3
    assert len(kernel_processes(gw)) == 3

    # A claim moves a slot from the pool to a user: it passes although the gateway is full,
    # and the pool cannot refill.
    warm = starts(gw, "warm")
    for user in ("u3", "u4"):
        answer = start_raw(gw, KERNEL_USERNAME=user)
        assert answer.status_code == 201, answer.text
    assert starts(gw, "warm") == warm + 2
    assert holds(lambda: len(kernel_processes(gw)) <= 3 and pool_kernels(gw) == 0, 2.0)
    assert len(gw.kernels()) == 3

    # The pool is empty: the start goes cold, and the total refuses it.
    assert_refused(start_raw(gw, KERNEL_USERNAME="u5"), "total")

    # A full gateway is no fault of the pool: no error, no "failing" gauge.
    assert "pool python3: cannot start a kernel" not in full_log(gw)
    assert metric(gw, "sandbox_pool_refill_failing", kernelspec="python3") == 0

    # A slot freed: the pool takes it back at once (not at its next check, 10 s away).
    requests.delete(f"{gw.http}/api/kernels/{cold.json()['id']}", timeout=30)
    wait_until(lambda: pool_kernels(gw) == 1, "the pool refilled after a slot freed", timeout=6)
    assert len(kernel_processes(gw)) == 3


def test_an_unauthorised_user_is_refused_warm_as_cold(pool: Gateway) -> None:
    """Enterprise Gateway authorises KERNEL_USERNAME in its launch path, which a pooled kernel
    has passed for the pool: the claim must make the same check."""
    warm = starts(pool, "warm")
    refused = start_raw(pool, KERNEL_USERNAME="nobody-in-particular")
    assert refused.status_code == 403, refused.text
    assert "is not authorized" in refused.json()["reason"]
    assert starts(pool, "warm") == warm
    assert holds(lambda: pool_kernels(pool) == POOL_SIZE, 1.0)
    assert pool.kernels() == []


def test_a_users_second_start_takes_no_pooled_kernel(limited: Gateway) -> None:
    gw = limited
    first = start_raw(gw, KERNEL_USERNAME="alice")
    assert first.status_code == 201, first.text
    wait_full(gw)  # 1 handed out + 2 pooled: the gateway is full
    warm = starts(gw, "warm")
    refused = start_raw(gw, KERNEL_USERNAME="alice")
    assert refused.status_code >= 400, refused.text  # 403: the next test
    assert starts(gw, "warm") == warm
    assert holds(
        lambda: pool_kernels(gw, "ready") == POOL_SIZE and pool_kernels(gw, "starting") == 0, 1.0
    )
    assert [k["id"] for k in gw.kernels()] == [first.json()["id"]]
    # Another user still claims a pooled kernel (the gateway's total is full).
    bob = start_raw(gw, KERNEL_USERNAME="bob")
    assert bob.status_code == 201, bob.text
    assert starts(gw, "warm") == warm + 1


def test_a_users_second_start_is_refused_with_403(limited: Gateway) -> None:
    gw = limited
    assert start_raw(gw, KERNEL_USERNAME="alice").status_code == 201
    refused = start_raw(gw, KERNEL_USERNAME="alice")
    assert_refused(refused, "user")
    assert refused.json()["kernel_limit"] == {
        "scope": "user",
        "limit": 1,
        "in_use": 1,
        "user": "alice",
    }
    assert "Uncaught exception POST /api/kernels" not in full_log(gw)


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SANDBOX_POOL": "python3=x"},
            "invalid setting: SANDBOX_POOL: expected kernelspec=size pairs (e.g. python3=2), "
            "got 'python3=x'",
        ),
        (
            {"SANDBOX_POOL": "nosuchspec=1"},
            "SANDBOX_POOL names kernelspec 'nosuchspec', which does not exist",
        ),
        (
            {"SANDBOX_POOL": "python3=5", "SANDBOX_MAX_KERNELS": "3"},
            "SANDBOX_POOL holds 5 kernels, more than SANDBOX_MAX_KERNELS (3)",
        ),
        ({"SANDBOX_POOL": "python3=1,python3=2"}, "SANDBOX_POOL names 'python3' twice"),
        (
            {"SANDBOX_POOL": "python3=1", "SANDBOX_POOL_MAX_AGE": "0"},
            "invalid setting: SANDBOX_POOL_MAX_AGE must be a number of seconds > 0, got '0'",
        ),
        (
            {"SANDBOX_POOL": "python3=1", "SANDBOX_POOL_CHECK_INTERVAL": "soon"},
            "SANDBOX_POOL_CHECK_INTERVAL must be a number of seconds > 0, got 'soon'",
        ),
    ],
)
def test_bad_settings_stop_the_gateway_with_a_message(env: dict[str, str], message: str) -> None:
    gw = Gateway(env=env)
    try:
        with pytest.raises(RuntimeError, match="exited early") as info:
            gw.start()
        assert message in str(info.value)
    finally:
        gw.stop()
        kill_leftovers(gw)


# --- faults --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_gateway(kernelspecs: Path) -> Iterator[tuple[Gateway, float]]:
    """Pools of kernelspecs that cannot start: ``flaky`` (no such executable, until a test
    creates it) and ``exits`` (its process exits at once).  Yields the gateway and when it
    started (``time.monotonic()``)."""
    began = time.monotonic()
    with running({"SANDBOX_POOL": "flaky=1,exits=1", "JUPYTER_PATH": str(kernelspecs)}) as gw:
        yield gw, began


def test_a_refill_that_fails_backs_off_and_logs_once(
    failing_gateway: tuple[Gateway, float], kernelspecs: Path
) -> None:
    gw, began = failing_gateway
    failures = "sandbox_pool_refill_failures_total"
    wait_until(
        lambda: metric(gw, "sandbox_pool_refill_failing", kernelspec="flaky") == 1,
        "the flaky pool reported as failing",
        timeout=10,
    )
    time.sleep(max(0.0, began + 8 - time.monotonic()))  # a rate: it takes a while to see
    # Retries after 1, 2, 4 s (±20 %): 3 or 4 attempts in 8 s, not one a second or a tight loop.
    assert 2 <= metric(gw, failures, kernelspec="flaky") <= 5
    assert metric(gw, "sandbox_pool_refill_failing", kernelspec="flaky") == 1
    errors = [line for line in full_log(gw).splitlines() if "pool flaky: cannot start" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("[E ")
    assert "No such file or directory" in errors[0]

    # The gateway still serves other kernelspecs.
    with session(gw) as s:
        assert s.execute("print(1 + 1)").stdout.strip() == "2"
    assert starts(gw, "cold", "not_pooled") == 1

    # The kernelspec works again: the pool recovers, says so once, and fills.
    (kernelspecs / "bin" / "flaky-python").symlink_to(gateway_venv() / "bin" / "python")
    wait_full(gw, 1, "flaky")
    assert metric(gw, "sandbox_pool_refill_failing", kernelspec="flaky") == 0
    assert full_log(gw).count("pool flaky: kernels start again") == 1


def test_a_kernel_process_that_exits_at_once_is_a_failed_refill(
    failing_gateway: tuple[Gateway, float],
) -> None:
    gw, began = failing_gateway
    wait_until(
        lambda: metric(gw, "sandbox_pool_refill_failures_total", kernelspec="exits") >= 1,
        "a failed refill of the exits pool",
        timeout=max(0.0, began + 10 - time.monotonic()),
    )


def test_a_dead_pooled_kernel_is_replaced(pool: Gateway) -> None:
    key, pid = next(iter(pooled_processes(pool).items()))
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: f"pool python3: kernel {key} died: replacing it" in full_log(pool),
        "the health check noticing the dead kernel",
        timeout=10,
    )
    wait_full(pool)
    assert key not in pooled_processes(pool)
    with session(pool) as s:
        assert s.kernel_id != key
        assert s.execute("print(3 * 3)").stdout.strip() == "9"


def test_a_claim_never_hands_out_a_dead_pooled_kernel() -> None:
    # Health checks far apart: the claim itself meets the dead kernel.
    with running({"SANDBOX_POOL": "python3=1", "SANDBOX_POOL_CHECK_INTERVAL": "600"}) as gw:
        wait_full(gw, 1)
        ((key, pid),) = pooled_processes(gw).items()
        os.kill(pid, signal.SIGKILL)
        with session(gw) as s:
            assert s.kernel_id != key
            assert s.execute("print(4 * 4)").stdout.strip() == "16"
        assert f"pooled kernel {key} failed its claim" in full_log(gw)
        assert starts(gw, "warm") + starts(gw, "cold", "empty") == 1
        wait_full(gw, 1)


def test_a_kernel_past_max_age_is_replaced() -> None:
    env = {
        "SANDBOX_POOL": "python3=1",
        "SANDBOX_POOL_MAX_AGE": "2",
        "SANDBOX_POOL_CHECK_INTERVAL": "1",
    }
    aged = re.compile(r"pool python3: kernel (\S+) reached SANDBOX_POOL_MAX_AGE: replacing it")
    with running(env) as gw:
        wait_until(lambda: len(aged.findall(full_log(gw))) >= 2, "two kernels replaced for age")
        replaced = set(aged.findall(full_log(gw)))
        wait_until(
            lambda: not replaced & set(kernel_processes(gw)), "aged kernels shut down", timeout=10
        )
        wait_until(lambda: pool_kernels(gw) == 1, "the pool full again")
        assert len(pooled_processes(gw)) <= 2  # the one ready, at most one more starting
        with session(gw) as s:
            assert s.kernel_id not in replaced
            assert s.execute("print(5 * 5)").stdout.strip() == "25"


# --- restart and stop ----------------------------------------------------------------------------


def test_a_restart_keeps_the_requests_variables(pool: Gateway) -> None:
    with session(pool, "carol", KERNEL_PROJECT="demo") as s:
        assert starts(pool, "warm") >= 1
        before = probe(s)
        s.execute("marker = 1")
        answer = requests.post(f"{pool.http}/api/kernels/{s.kernel_id}/restart", timeout=60)
        assert answer.status_code == 200, answer.text
        with GatewayKernelSession(pool.http, pool.ws, "python3", kernel_id=s.kernel_id) as again:
            after = probe(again)
            assert again.execute("print('marker' in globals())").stdout.strip() == "False"
    assert after["pid"] != before["pid"]  # a new process: it did restart
    assert (after["project"], after["user"], after["kernel_id"]) == ("demo", "carol", s.kernel_id)
    assert after["child"] == "demo"


@pytest.mark.parametrize(
    "pooled",
    [
        "python3=2",
        "slow=1",
    ],
)
def test_a_graceful_stop_leaves_no_pooled_kernel_behind(kernelspecs: Path, pooled: str) -> None:
    spec, size = pooled.split("=")
    gw = Gateway(env={"SANDBOX_POOL": pooled, "JUPYTER_PATH": str(kernelspecs)})
    try:
        gw.start()
        if spec == "slow":  # stopped while its kernel is starting
            wait_until(lambda: pool_kernels(gw, "starting", spec) == 1, "a slow kernel starting")
        else:
            wait_full(gw, int(size), spec)
        assert len(pooled_processes(gw)) == int(size)
        gw.stop()
        wait_until(lambda: not kernel_processes(gw), "no kernel process left", timeout=5)
    finally:
        gw.stop()
        kill_leftovers(gw)
