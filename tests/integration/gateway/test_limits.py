"""Kernel-count limits, start-request checks and unknown kernel ids, on a real gateway.

A real Enterprise Gateway 3.3 with the sandbox's config (``sandbox_gateway.admission.limits``)
and real local kernels.
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from jupyter_kernel_client import (
    AsyncGatewayKernelSession,
    GatewayKernelSession,
    GatewayRefusedError,
    KernelLimitError,
)
from sandbox_gateway.admission import limits as sandbox_limits
from testkit.concurrent import at_once
from testkit.gateway import (
    LAUNCHER_ARGUMENTS,
    Gateway,
    add_local_launcher_kernelspec,
    gateway_venv,
    local_launcher_env,
)

MAX_KERNELS = 3
MAX_PER_USER = 2


@pytest.fixture(scope="module")
def limited_gateway() -> Iterator[Gateway]:
    gw = Gateway(
        env={
            "SANDBOX_MAX_KERNELS": str(MAX_KERNELS),
            "SANDBOX_MAX_KERNELS_PER_USER": str(MAX_PER_USER),
            # Lets requests without KERNEL_USERNAME start, as the gateway's own user (root here).
            "EG_UNAUTHORIZED_USERS": "nobody-in-particular",
        }
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gw(limited_gateway: Gateway) -> Iterator[Gateway]:
    """The limited gateway, emptied after each test so every test has all the slots."""
    yield limited_gateway
    for kernel in limited_gateway.kernels():
        requests.delete(f"{limited_gateway.http}/api/kernels/{kernel['id']}", timeout=30)
    deadline = time.monotonic() + 30
    while limited_gateway.kernels() and time.monotonic() < deadline:
        time.sleep(0.1)


def start_raw(gw: Gateway, env: Any = None, *, with_env: bool = True) -> requests.Response:
    body: dict[str, Any] = {"name": "python3"}
    if with_env:
        body["env"] = env
    return requests.post(f"{gw.http}/api/kernels", json=body, timeout=60)


def assert_plain_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert "traceback" not in response.text.lower()
    body: dict[str, Any] = response.json()
    assert body.get("reason")
    return body


def session(gw: Gateway, user: str, **kwargs: Any) -> GatewayKernelSession:
    return GatewayKernelSession(gw.http, gw.ws, "python3", {"KERNEL_USERNAME": user}, **kwargs)


# --- limits ------------------------------------------------------------------------------------


def test_total_limit_refuses_with_403_and_a_slot_frees_on_shutdown(gw: Gateway) -> None:
    sessions = [session(gw, f"user{n}").start() for n in range(MAX_KERNELS)]
    try:
        refused = start_raw(gw, {"KERNEL_USERNAME": "user9"})
        body = assert_plain_error(refused, 403)
        assert (
            body["reason"] == f"kernel limit reached: {MAX_KERNELS} of {MAX_KERNELS} kernels in use"
        )
        assert body["kernel_limit"] == {
            "scope": "total",
            "limit": MAX_KERNELS,
            "in_use": MAX_KERNELS,
        }
        assert len(gw.kernels()) == MAX_KERNELS  # nothing was started

        began = time.monotonic()
        with pytest.raises(KernelLimitError, match="kernel limit reached") as info:
            session(gw, "user9", max_retries=3, retry_delay=20).start()
        assert time.monotonic() - began < 10  # at once, not after 20 s of backoff
        assert isinstance(info.value, GatewayRefusedError)
        assert (info.value.scope, info.value.limit, info.value.status_code) == (
            "total",
            MAX_KERNELS,
            403,
        )

        sessions.pop(0).shutdown()
        with session(gw, "user9") as replacement:
            assert str(replacement.execute("1 + 1")) == "2"
    finally:
        for s in sessions:
            s.shutdown()


async def test_per_user_limit_counts_each_username_apart(gw: Gateway) -> None:
    def alice() -> AsyncGatewayKernelSession:
        env = {"KERNEL_USERNAME": "alice"}
        return AsyncGatewayKernelSession(gw.http, gw.ws, "python3", env, retry_delay=20)

    started = [await alice().start() for _ in range(MAX_PER_USER)]
    try:
        began = time.monotonic()
        with pytest.raises(KernelLimitError) as info:
            await alice().start()
        assert time.monotonic() - began < 10
        error = info.value
        assert (error.scope, error.limit, error.in_use, error.user) == (
            "user",
            MAX_PER_USER,
            MAX_PER_USER,
            "alice",
        )
        assert f"{MAX_PER_USER} of {MAX_PER_USER} kernels in use for user 'alice'" in str(error)
        # Another user still has slots.
        async with AsyncGatewayKernelSession(
            gw.http, gw.ws, "python3", {"KERNEL_USERNAME": "bob"}
        ) as bob:
            assert str(await bob.execute("6 * 7")) == "42"
    finally:
        for s in started:
            await s.shutdown()


def test_a_request_without_username_counts_as_the_gateways_user(gw: Gateway) -> None:
    user = getpass.getuser()  # the gateway runs as the same user as this test
    for _ in range(MAX_PER_USER):
        assert start_raw(gw, with_env=False).status_code == 201
    for refused in (start_raw(gw, with_env=False), start_raw(gw, {"KERNEL_USERNAME": user})):
        body = assert_plain_error(refused, 403)
        assert body["kernel_limit"]["scope"] == "user"
        assert body["kernel_limit"]["user"] == user
    assert start_raw(gw, {"KERNEL_USERNAME": "someone-else"}).status_code == 201


@pytest.mark.parametrize(("users", "limit"), [("distinct", MAX_KERNELS), ("same", MAX_PER_USER)])
def test_concurrent_starts_never_overshoot(gw: Gateway, users: str, limit: int) -> None:
    attempts = 6

    def start(n: int) -> requests.Response:
        return start_raw(gw, {"KERNEL_USERNAME": f"racer{n}" if users == "distinct" else "racer"})

    answers = at_once(attempts, start)
    statuses = sorted(a.status_code for a in answers)
    # Exactly attempts - limit are refused for the limit; the others were admitted (a local
    # kernel may still fail its launch on a port race, which gives its slot back: 5xx).
    refused = [a for a in answers if a.status_code == 403]
    assert len(refused) == attempts - limit, statuses
    assert all("kernel_limit" in a.json() for a in refused)
    assert len(gw.kernels()) == statuses.count(201) <= limit


# --- start-request checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KERNEL_ID": "not-a-uuid"}, "KERNEL_ID"),
        ({"KERNEL_ID": str(uuid.uuid4()).upper()}, "KERNEL_ID"),
        ({"KERNEL_ID": str(uuid.uuid1())}, "KERNEL_ID"),
        ({"KERNEL_LAUNCH_TIMEOUT": "inf"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "-inf"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "nan"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "-1"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "0"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "abc"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_LAUNCH_TIMEOUT": "1e999"}, "KERNEL_LAUNCH_TIMEOUT"),
        ({"KERNEL_USERNAME": "two words"}, "KERNEL_USERNAME"),
        ({"KERNEL_USERNAME": "../etc"}, "KERNEL_USERNAME"),
        ({"KERNEL_USERNAME": "x" * 65}, "KERNEL_USERNAME"),
        ({"KERNEL_USERNAME": ""}, "KERNEL_USERNAME"),
        ({"KERNEL_USERNAME": "100%"}, "'100%'"),  # echoed as sent, not as a format
        ({"KERNEL_PROJECT": 7}, "KERNEL_PROJECT"),
        ({"KERNEL_PROJECT": None}, "KERNEL_PROJECT"),
        (["KERNEL_X=1"], "env"),
        (None, "env"),
        # No process environment can hold these (stock EG failed in the launch: 500).
        ({"KERNEL_PROJECT": "a\0b"}, "NUL"),
        ({"KERNEL_A=B": "x"}, "not a variable name"),
        ({"KERNEL_PROJECT": "\ud800"}, "lone surrogate"),
        ({"": "x"}, "not a variable name"),
        ({"KERNEL_PROJECT": "x" * (32 * 1024 + 1)}, "longer than"),
        # A cold kernel would not get it (the launchers keep KERNEL_[A-Z0-9_]+), a warm one would.
        ({"KERNEL_lower": "x"}, "KERNEL_* names in upper case"),
    ],
)
def test_malformed_start_requests_are_400_and_start_nothing(
    gw: Gateway, env: Any, named: str
) -> None:
    before = gw.kernels()
    body = assert_plain_error(start_raw(gw, env), 400)
    assert named in body["message"]
    assert gw.kernels() == before


@pytest.mark.parametrize(("asked", "kept"), [("1e9", "300"), ("0.25", "1"), ("45", "45")])
def test_launch_timeout_is_clamped_to_its_range(gw: Gateway, asked: str, kept: str) -> None:
    env = {"KERNEL_USERNAME": "clamped", "KERNEL_LAUNCH_TIMEOUT": asked}
    with GatewayKernelSession(gw.http, gw.ws, "python3", env) as s:
        # Enterprise Gateway hands the request's KERNEL_* variables to the kernel: this is the
        # value it read as the launch timeout.
        assert str(s.execute("import os; os.environ['KERNEL_LAUNCH_TIMEOUT']")) == repr(kept)


def test_a_valid_kernel_id_is_still_honoured(gw: Gateway) -> None:
    kernel_id = str(uuid.uuid4())
    started = start_raw(gw, {"KERNEL_USERNAME": "chooser", "KERNEL_ID": kernel_id})
    assert started.status_code == 201, started.text
    assert started.json()["id"] == kernel_id


def test_concurrent_starts_with_one_kernel_id_start_one_kernel(gw: Gateway) -> None:
    """Stock EG checked only kernels already in its map: every one of these launched, each on a
    slot the limits counted once, and on Docker every one joined the same private network."""
    attempts, kernel_id = 6, str(uuid.uuid4())
    answers = at_once(
        attempts,
        lambda n: start_raw(gw, {"KERNEL_USERNAME": f"racer{n}", "KERNEL_ID": kernel_id}),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (attempts - 1), statuses
    for answer in answers:
        if answer.status_code == 409:
            assert kernel_id in assert_plain_error(answer, 409)["message"]
    assert [k["id"] for k in gw.kernels()] == [kernel_id]
    assert _kernel_processes(gw, kernel_id) == 1
    # The id is free again once its kernel is gone.
    assert requests.delete(f"{gw.http}/api/kernels/{kernel_id}", timeout=30).status_code == 204
    again = start_raw(gw, {"KERNEL_USERNAME": "racer0", "KERNEL_ID": kernel_id})
    assert again.status_code == 201, again.text


def test_a_start_with_the_id_of_a_running_kernel_is_409(gw: Gateway) -> None:
    kernel_id = str(uuid.uuid4())
    assert start_raw(gw, {"KERNEL_USERNAME": "first", "KERNEL_ID": kernel_id}).status_code == 201
    body = assert_plain_error(
        start_raw(gw, {"KERNEL_USERNAME": "second", "KERNEL_ID": kernel_id}), 409
    )
    assert "exists or is starting" in body["message"]
    assert [k["id"] for k in gw.kernels()] == [kernel_id]


def _kernel_processes(gw: Gateway, kernel_id: str) -> int:
    """Live local kernel processes started for ``kernel_id`` (their connection file names it)."""
    runtime = str(gw.log_path.parent / "runtime")
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        count += f"kernel-{kernel_id}.json" in command and runtime in command
    return count


# --- unknown kernels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "{id}/restart"),
        ("POST", "{id}/interrupt"),
        ("GET", "{id}"),
        ("DELETE", "{id}"),
        ("POST", "a-b-c-d-e/restart"),  # the URL's id pattern, not a UUID
        ("POST", "not-a-kernel/restart"),
        ("GET", "not-a-kernel"),
    ],
)
def test_unknown_kernel_ids_are_404_without_traceback(gw: Gateway, method: str, path: str) -> None:
    url = f"{gw.http}/api/kernels/" + path.format(id=uuid.uuid4())
    assert_plain_error(requests.request(method, url, timeout=30), 404)


def test_restart_of_a_known_kernel_still_works(gw: Gateway) -> None:
    with session(gw, "restarter") as s:
        s.execute("marker = 1")
        answer = requests.post(f"{gw.http}/api/kernels/{s.kernel_id}/restart", timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == s.kernel_id


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SANDBOX_MAX_KERNELS": "0"}, "SANDBOX_MAX_KERNELS"),
        ({"SANDBOX_MAX_KERNELS": "many"}, "SANDBOX_MAX_KERNELS"),
        ({"SANDBOX_MAX_KERNELS_PER_USER": "-1"}, "SANDBOX_MAX_KERNELS_PER_USER"),
        ({"SANDBOX_KERNEL_MEMORY": "lots"}, "SANDBOX_KERNEL_MEMORY"),
        ({"SANDBOX_KERNEL_MEMORY": "1m"}, "SANDBOX_KERNEL_MEMORY"),
        ({"SANDBOX_MAX_LAUNCH_TIMEOUT": "inf"}, "SANDBOX_MAX_LAUNCH_TIMEOUT"),
        ({"SANDBOX_MAX_LAUNCH_TIMEOUT": "0"}, "SANDBOX_MAX_LAUNCH_TIMEOUT"),
        ({"SANDBOX_MEMORY_RESERVE": "some"}, "SANDBOX_MEMORY_RESERVE"),
    ],
)
def test_invalid_settings_stop_the_gateway_with_a_message(env: dict[str, str], named: str) -> None:
    gateway = Gateway(env=env)
    try:
        with pytest.raises(RuntimeError, match="exited early") as info:
            gateway.start()
        assert f"invalid setting: {named}" in str(info.value)
    finally:
        gateway.stop()


def mem_kb(name: str) -> int:
    return next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith(f"{name}:")
    )


def test_default_total_comes_from_host_memory_and_culled_kernels_free_their_slot() -> None:
    gateway = Gateway(
        env={
            "SANDBOX_MAX_KERNELS": "",  # unset: the test gateway's fixed cap does not apply
            "SANDBOX_CULL_IDLE_TIMEOUT": "4",
            "SANDBOX_CULL_INTERVAL": "1",
        }
    )
    gateway.start()
    try:
        # Three quarters of this host's memory, a kernel counted at its 128 MiB footprint.
        expected = int(mem_kb("MemTotal") * 1024 * 0.75 // sandbox_limits.KERNEL_FOOTPRINT)
        status = requests.get(f"{gateway.http}/api/sandbox/status", timeout=30).json()
        assert status["kernels"]["total_limit"] == expected
        for user in ("first", "second"):
            assert start_raw(gateway, {"KERNEL_USERNAME": user}).status_code == 201
        deadline = time.monotonic() + 60
        while gateway.kernels() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert gateway.kernels() == [], "idle kernels were not culled"
        status = requests.get(f"{gateway.http}/api/sandbox/status", timeout=30).json()
        assert status["kernels"]["total"] == 0  # their slots are free again
    finally:
        gateway.stop()


GIB = 1024**3
HOG = GIB  # what each hungry kernel holds: written, so resident


def test_a_host_short_of_memory_refuses_starts_until_memory_is_freed() -> None:
    # A reserve 3 GiB below what is available now: hungry kernels are admitted one after another
    # until the host is short, then the next start is refused; freeing their memory admits it.
    reserve = mem_kb("MemAvailable") * 1024 - 3 * GIB
    assert reserve > 2 * GIB, "too little memory on this machine for the test"
    gateway = Gateway(
        env={"SANDBOX_MEMORY_RESERVE": f"{reserve // 1024}k", "SANDBOX_MAX_KERNELS": "10"}
    )
    gateway.start()
    hungry: list[GatewayKernelSession] = []
    try:
        refusal = None
        while refusal is None and len(hungry) < 6:
            try:
                kernel = session(gateway, f"user{len(hungry)}").start()
            except KernelLimitError as exc:
                refusal = exc
                break
            hungry.append(kernel)
            kernel.execute(f"hog = b'x' * {HOG}").raise_for_error()
        assert refusal is not None, "six hungry kernels and no refusal"
        assert len(hungry) >= 2, f"refused with {len(hungry)} hungry kernels: {refusal}"
        assert (refusal.scope, refusal.status_code) == ("memory", 403), refusal
        assert "host memory low" in str(refusal)
        before = {k["id"] for k in gateway.kernels()}
        body = assert_plain_error(start_raw(gateway, {"KERNEL_USERNAME": "late"}), 403)
        assert body["reason"].startswith("host memory low: "), body
        figures = body["kernel_limit"]
        assert figures["scope"] == "memory" and figures["reserve_bytes"] == reserve // 1024 * 1024
        assert figures["available_bytes"] < figures["reserve_bytes"], figures
        assert {k["id"] for k in gateway.kernels()} == before  # nothing was started

        for kernel in hungry:
            kernel.execute("del hog").raise_for_error()
        with session(gateway, "late") as late:
            assert str(late.execute("1 + 1")) == "2"
    finally:
        for kernel in hungry:
            kernel.shutdown()
        gateway.stop()


def test_settings_default_and_refuse_as_documented(tmp_path: Path) -> None:
    limits = sandbox_limits
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16777216 kB\nMemAvailable:    4194304 kB\n")  # 16, 4 GiB

    settings = limits.LimitSettings.from_env({}, str(meminfo))
    assert settings.max_kernels == 96  # 16 GiB * 0.75 / 128 MiB
    assert settings.max_kernels_per_user == settings.max_kernels
    assert settings.max_launch_timeout == 300
    assert settings.memory_reserve == 16 * GIB // 20  # 5 % of 16 GiB: above one kernel's 512 MiB
    small = limits.LimitSettings.from_env({"SANDBOX_KERNEL_MEMORY": "64m"}, str(meminfo))
    assert small.max_kernels == 192  # the limit, when below the footprint
    big = limits.LimitSettings.from_env({"SANDBOX_KERNEL_MEMORY": "6g"}, str(meminfo))
    assert (big.max_kernels, big.memory_reserve) == (96, 6 * GIB)  # room for one at its limit
    tiny = tmp_path / "tiny"
    tiny.write_text("MemTotal: 65536 kB\nMemAvailable: 65536 kB\n")
    assert limits.LimitSettings.from_env({}, str(tiny)).max_kernels == 1  # never 0
    explicit = limits.LimitSettings.from_env(
        {
            "SANDBOX_MAX_KERNELS": "5",
            "SANDBOX_MAX_KERNELS_PER_USER": "2",
            "SANDBOX_MEMORY_RESERVE": "0",
        },
        "/nonexistent",
    )
    assert (explicit.max_kernels, explicit.max_kernels_per_user) == (5, 2)
    assert explicit.memory_reserve == 0  # off: the host's memory is never read
    reserved = limits.LimitSettings.from_env({"SANDBOX_MEMORY_RESERVE": "2g"}, str(meminfo))
    assert reserved.memory_reserve == 2 * GIB
    with pytest.raises(limits.SettingsError, match="SANDBOX_MAX_KERNELS"):
        limits.LimitSettings.from_env({}, "/nonexistent")  # no memory figure: say what to set
    with pytest.raises(limits.SettingsError, match="SANDBOX_MEMORY_RESERVE"):
        limits.LimitSettings.from_env({"SANDBOX_MEMORY_RESERVE": "plenty"}, str(meminfo))
    old_kernel = tmp_path / "old"
    old_kernel.write_text("MemTotal: 8388608 kB\n")  # Linux before 3.14: no MemAvailable
    with pytest.raises(limits.SettingsError, match="no MemAvailable"):
        limits.LimitSettings.from_env({"SANDBOX_MEMORY_RESERVE": "1g"}, str(old_kernel))


def test_the_reserve_refuses_cold_starts_and_claims_and_changes_nothing(tmp_path: Path) -> None:
    limits = sandbox_limits
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n")
    settings = limits.LimitSettings.from_env({"SANDBOX_MEMORY_RESERVE": "3g"}, str(meminfo))
    ledger = limits.KernelLedger(settings)
    pooled = ledger.reserve("pool", set(), per_user=False)
    ledger.named(pooled, "k1")
    meminfo.write_text("MemTotal: 8388608 kB\nMemAvailable: 2097152 kB\n")  # 2 GiB left
    with pytest.raises(limits.HostMemoryLow) as low:
        ledger.reserve("alice", {"k1"})
    assert low.value.body()["kernel_limit"] == {
        "scope": "memory",
        "available_bytes": 2 * GIB,
        "reserve_bytes": 3 * GIB,
    }
    with pytest.raises(limits.HostMemoryLow):
        ledger.hand_over(pooled, "alice", {"k1"})  # a warm claim too
    assert (ledger.starting, pooled.user) == ([pooled], "pool")
    assert ledger.usage("alice", {"k1"}).user == 0
    meminfo.write_text("MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n")
    ledger.hand_over(pooled, "alice", {"k1"})
    assert ledger.usage("alice", {"k1"}).user == 1


# --- what a launcher would refuse ----------------------------------------------------------------

SIZED = "sized-pod"  # the Kubernetes launcher, with the chart's kind of maximum
IMAGED = "one-image"  # the Docker launcher, with its kernelspec's image


@pytest.fixture(scope="module")
def launcher_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Kernelspecs that run the sandbox's own launchers, here as local processes: a request
    that got past the gateway would run the launcher, and its refusal would come back as 500."""
    share = tmp_path_factory.mktemp("share")
    python = str(gateway_venv() / "bin" / "python")
    add_local_launcher_kernelspec(
        share,
        SIZED,
        [
            *(python, "-I", "-m", "sandbox_gateway.launchers.kubernetes", *LAUNCHER_ARGUMENTS),
            *("--pod-template", "/nonexistent.j2", "--max-cpu", "2", "--max-memory", "4Gi"),
        ],
    )
    add_local_launcher_kernelspec(
        share,
        IMAGED,
        [
            *(python, "-I", "-m", "sandbox_gateway.launchers.docker", *LAUNCHER_ARGUMENTS),
            *("--image", "mini-jupyter-sandbox/kernel-python:0.1.0"),
        ],
    )
    gateway = Gateway(
        env={
            **local_launcher_env(share, os.path.dirname(__file__), 20),
            "EG_UNAUTHORIZED_USERS": "nobody-in-particular",
        }
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    "name, env, said",
    [
        (SIZED, {"KERNEL_CPUS": "3"}, "KERNEL_CPUS='3' is above the largest kernel allowed (2)"),
        (SIZED, {"KERNEL_MEMORY": "0"}, "every kernel has a limit"),
        (SIZED, {"KERNEL_MEMORY": "1ki"}, "not a Kubernetes quantity"),
        (IMAGED, {"KERNEL_IMAGE": "alpine:latest"}, "'alpine:latest' is not allowed"),
    ],
)
def test_what_the_launcher_would_refuse_is_a_403_before_any_launch(
    launcher_gateway: Gateway, name: str, env: dict[str, str], said: str
) -> None:
    response = requests.post(
        f"{launcher_gateway.http}/api/kernels", json={"name": name, "env": env}, timeout=60
    )
    body = assert_plain_error(response, 403)
    assert said in body["message"]
    assert launcher_gateway.kernels() == []
    # The client's error for it is final (the SandboxSession controller fails the session).
    with pytest.raises(GatewayRefusedError, match="403"):
        GatewayKernelSession(launcher_gateway.http, launcher_gateway.ws, name, env).start()
