"""A Kubernetes API for the controller's tests: kmock's ``KubernetesEmulator`` over HTTP.

No real API server can run here, so kmock's emulator stands in for it (the issue names it):
an in-memory object store with list/watch/create/patch/delete and finalizer-aware deletion,
served on a loopback port to a real kopf operator.  :class:`ApiServer` adds what the real API
server does and the emulator leaves out: ``uid``, ``resourceVersion``, ``generation`` (bumped on
spec changes), ``creationTimestamp``, ``generateName`` and the CRD's spec defaults.  It can also
hold back status writes (:meth:`Cluster.hold_status_writes`) to freeze a controller in the middle
of a reconcile.

:class:`Cluster` runs it in a background thread and offers kubectl-like helpers; :class:`Controller`
runs the operator as a separate process (``python -m controller``) so that it can be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import jsonpatch  # type: ignore[import-untyped]
import kmock
import requests
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
CRD_PATH = (
    REPO / "charts" / "mini-jupyter-sandbox" / "crds" / "sandboxsessions.minisandbox.dev.yaml"
)
ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}

Obj = dict[str, Any]
_SERVING: contextvars.ContextVar[kmock.Request | None] = contextvars.ContextVar(
    "api_server_serving", default=None
)


def load_crd(path: Path = CRD_PATH) -> Obj:
    crd: Obj = yaml.safe_load(path.read_text())
    return crd


@dataclass(frozen=True)
class Write:
    """One state-changing request the API server accepted (for timing and assertions).

    ``action`` is create, update (a patch) or delete.
    """

    at: float
    """``time.monotonic()`` when it was applied."""
    wall: float
    """``time.time()`` when it was applied (to line up with other processes' logs)."""
    action: str
    namespace: str | None
    name: str | None
    subresource: str | None
    data: Any


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """The emulator plus the metadata bookkeeping of a real API server."""

    spec_defaults: dict[str, Any] = attrs.field(factory=dict)
    crd_resource: kmock.resource | None = attrs.field(default=None)
    writes: list[Write] = attrs.field(factory=list)
    hold_status_of: set[str] = attrs.field(factory=set)
    held: list[str] = attrs.field(factory=list)
    _gate: asyncio.Event | None = attrs.field(default=None)
    _drop_held: bool = attrs.field(default=False)
    _version: int = attrs.field(default=0)
    _inflight: set[kmock.Request] = attrs.field(factory=set)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # kmock 0.8 matches a request to a reaction with ``request in reaction``, which scans every
    # request it has kept (by criteria, then identity): the cost of one request grows with all
    # that came before, and a benchmark ends up measuring kmock's request log.  A real API
    # server keeps no such log.  While a request is being served, the server's request view
    # shows that request only (a context variable: each aiohttp request runs in its own task),
    # and only requests still in flight are kept (``writes`` is this harness's own record).

    def __iter__(self) -> Iterator[kmock.Request]:
        current = _SERVING.get()
        if current is None:
            yield from super().__iter__()
        else:
            yield current

    async def _handle(self, request: kmock.Request) -> Any:
        token = _SERVING.set(request)
        self._inflight.add(request)
        try:
            return await self._handle_stamped(request)
        finally:
            self._inflight.discard(request)
            self._requests[:] = [r for r in self._requests if r in self._inflight]
            _SERVING.reset(token)

    async def _serve_list(self, request: kmock.Request) -> Any:
        # The emulator answers "..." as the list's resourceVersion; watches resume from it.
        result: Obj = dict(await super()._serve_list(request))  # type: ignore[arg-type]
        result["metadata"] = {"resourceVersion": str(self._version)}
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        # The emulator replays every stored object as ADDED when a watch starts.  A watch from
        # the resourceVersion of a list must not repeat what the list returned: a stale second
        # ADDED would make kopf act on an old version (its resourceVersion ``test`` fails).
        since = request.params.get("resourceVersion", "")
        floor = int(since) if since.isdigit() else 0
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and event.get("type") == "ADDED" and floor:
                version = str(event["object"].get("metadata", {}).get("resourceVersion", ""))
                if version.isdigit() and int(version) <= floor:
                    continue
            yield event

    async def _handle_stamped(self, request: kmock.Request) -> Any:
        action = request.action
        if request.resource is not None and action in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
            kmock.action.DELETE,
        ):
            await self._maybe_hold(request)
            self._stamp(request)
            try:
                response = await super()._handle(request)
            except jsonpatch.JsonPatchException as exc:
                # A failed ``test`` op (stale resourceVersion): a conflict, as the API server says.
                raise kmock.KubernetesError(409, "Conflict", str(exc)) from exc
            self.writes.append(
                Write(
                    time.monotonic(),
                    time.time(),
                    str(action.value).lower(),
                    request.namespace,
                    request.name or ((request.data or {}).get("metadata") or {}).get("name"),
                    request.subresource,
                    request.data,
                )
            )
            return response
        return await super()._handle(request)

    async def _maybe_hold(self, request: kmock.Request) -> None:
        if (
            request.action is kmock.action.UPDATE
            and request.subresource == "status"
            and request.name in self.hold_status_of
        ):
            if self._gate is None:
                self._gate = asyncio.Event()
            self.held.append(request.name)
            await self._gate.wait()
            if self._drop_held:
                raise kmock.KubernetesError(503, "ServiceUnavailable", "dropped by the test")

    def release_held(self, *, drop: bool) -> None:
        self.hold_status_of.clear()
        self._drop_held = drop
        if self._gate is not None:
            self._gate.set()

    def _stamp(self, request: kmock.Request) -> None:
        data = request.data
        key = (request.resource, request.namespace, request.name)
        if request.action is kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = self._next_version()
            meta["generation"] = 1
            meta["creationTimestamp"] = _now_text()
            if isinstance(data.get("spec"), dict) and request.resource == self.crd_resource:
                for field, default in self.spec_defaults.items():
                    data["spec"].setdefault(field, default)
            data.pop("status", None)  # the status subresource ignores status on create
        elif request.action is kmock.action.UPDATE and isinstance(data, list):
            # A JSON patch (kopf's finalizer edits): its own ``test`` ops run as sent.
            data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": self._next_version()}
            )
        elif request.action is kmock.action.UPDATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = self._next_version()
            current = self._current(key)
            if (
                current is not None
                and request.subresource is None
                and isinstance(data.get("spec"), dict)
                and any(current.get("spec", {}).get(k) != v for k, v in data["spec"].items())
            ):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        elif request.action is kmock.action.DELETE and self._current(key) is not None:
            stored = self._objects[key]  # type: ignore[index]  # name is known for a delete
            stored.patch({"metadata": {"resourceVersion": self._next_version()}})

    def _current(self, key: Any) -> Obj | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        raw: Obj = self._objects[key].raw
        return raw


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """The emulated API server on a loopback port, run in a background thread."""

    def __init__(self, crd: Obj | None = None) -> None:
        self.crd = crd or load_crd()
        names = self.crd["spec"]["names"]
        version = next(v for v in self.crd["spec"]["versions"] if v.get("storage"))
        self.group = self.crd["spec"]["group"]
        self.version = version["name"]
        self.plural = names["plural"]
        self._version_schema = version
        self.server: ApiServer | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.http = requests.Session()
        self.http.headers["Authorization"] = "Bearer emulator"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Cluster:
        self._thread = threading.Thread(target=self._main, name="kmock-api-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulated API server did not start")
        if self._error is not None:
            raise RuntimeError("the emulated API server failed") from self._error
        self.http.post(
            f"{self.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=self.crd
        ).raise_for_status()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)
        self.http.close()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ApiServer(spec_defaults=self._spec_defaults())
        self._register(server)
        async with server, kmock.Server(server) as http:
            self.server = server
            self.url = str(http.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def _spec_defaults(self) -> dict[str, Any]:
        spec_schema = self._version_schema["schema"]["openAPIV3Schema"]["properties"]["spec"]
        return {
            name: prop["default"]
            for name, prop in spec_schema.get("properties", {}).items()
            if "default" in prop
        }

    def _register(self, server: ApiServer) -> None:
        info = kmock.ResourceInfo
        server.resources["v1/namespaces"] = info(
            kind="Namespace", singular="namespace", namespaced=False, verbs=ALL_VERBS
        )
        server.resources["v1/events"] = info(
            kind="Event", singular="event", namespaced=True, verbs=ALL_VERBS
        )
        server.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
            kind="CustomResourceDefinition",
            singular="customresourcedefinition",
            namespaced=False,
            verbs=ALL_VERBS,
        )
        names = self.crd["spec"]["names"]
        resource = kmock.resource(self.group, self.version, self.plural)
        server.resources[resource] = info(
            kind=names["kind"],
            singular=names.get("singular"),
            shortnames=set(names.get("shortNames", [])),
            categories=set(names.get("categories", [])),
            namespaced=self.crd["spec"]["scope"] == "Namespaced",
            verbs=ALL_VERBS,
            subresources=set(self._version_schema.get("subresources", {})),
        )
        server.crd_resource = resource

    def call(self, fn: Callable[[ApiServer], Any]) -> Any:
        """Run ``fn(server)`` in the server's event loop and return its result."""
        assert self._loop is not None and self.server is not None
        server = self.server

        async def run() -> Any:
            return fn(server)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # --- kubectl-like helpers --------------------------------------------------------------

    def _collection(self, namespace: str) -> str:
        return f"{self.url}/apis/{self.group}/{self.version}/namespaces/{namespace}/{self.plural}"

    def create(self, namespace: str, name: str, spec: Obj | None = None) -> Obj:
        body = {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": self.crd["spec"]["names"]["kind"],
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec or {},
        }
        response = self.http.post(self._collection(namespace), json=body, timeout=10)
        response.raise_for_status()
        result: Obj = response.json()
        return result

    def get(self, namespace: str, name: str) -> Obj | None:
        response = self.http.get(f"{self._collection(namespace)}/{name}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: Obj = response.json()
        return result

    def list_sessions(self, namespace: str) -> list[Obj]:
        response = self.http.get(self._collection(namespace), timeout=10)
        response.raise_for_status()
        items: list[Obj] = response.json()["items"]
        return items

    def patch(self, namespace: str, name: str, body: Obj) -> Obj:
        response = self.http.patch(
            f"{self._collection(namespace)}/{name}",
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        response.raise_for_status()
        result: Obj = response.json()
        return result

    def delete(self, namespace: str, name: str) -> None:
        self.http.delete(f"{self._collection(namespace)}/{name}", timeout=10).raise_for_status()

    def events(self, namespace: str) -> list[Obj]:
        response = self.http.get(f"{self.url}/api/v1/namespaces/{namespace}/events", timeout=10)
        response.raise_for_status()
        items: list[Obj] = response.json()["items"]
        return items

    def wait_for(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[Obj | None], bool],
        timeout: float = 60,
        what: str = "the condition",
    ) -> Obj | None:
        """Poll the object until ``predicate(obj)`` holds (``obj`` is None once it is gone)."""
        deadline = time.monotonic() + timeout
        obj = self.get(namespace, name)
        while not predicate(obj):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{namespace}/{name}: {what} not reached in {timeout} s: {obj}"
                )
            time.sleep(0.1)
            obj = self.get(namespace, name)
        return obj

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 60) -> Obj:
        obj = self.wait_for(
            namespace,
            name,
            lambda o: o is not None and o.get("status", {}).get("phase") == phase,
            timeout,
            what=f"phase {phase}",
        )
        assert obj is not None
        return obj

    def kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig file pointing at this server (token auth, as kopf's login reads it)."""
        path = directory / "kubeconfig.yaml"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def hold_status_writes(self, name: str) -> None:
        """Hold every status write of ``name`` until :meth:`release_held`."""
        self.call(lambda server: server.hold_status_of.add(name))

    def held(self) -> list[str]:
        return list(self.call(lambda server: list(server.held)))

    def release_held(self, *, drop: bool) -> None:
        self.call(lambda server: server.release_held(drop=drop))

    def writes(self) -> list[Write]:
        return list(self.call(lambda server: list(server.writes)))


class Controller:
    """The operator as its own process: ``python -m controller --namespace NS``."""

    def __init__(
        self,
        cluster: Cluster,
        gateway_url: str,
        namespace: str | None = None,
        env: dict[str, str] | None = None,
        *,
        verbose: bool = True,
    ) -> None:
        self.verbose = verbose
        self._dir = Path(tempfile.mkdtemp(prefix="controller-test-"))
        self.log_path = self._dir / "controller.log"
        self.namespace = namespace
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig(self._dir)),
            "SANDBOX_GATEWAY_URL": gateway_url,
            "SANDBOX_METRICS_PORT": "0",
            "SANDBOX_CHECK_INTERVAL_SECONDS": "1",
            "SANDBOX_RETRY_DELAY_SECONDS": "1",
            "SANDBOX_GC_INTERVAL_SECONDS": "3600",
            # The repository's controller and client, whatever else is installed.
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "client")]),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Controller:
        scope = [f"--namespace={self.namespace}"] if self.namespace else ["--all-namespaces"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "controller",
                    *(["--verbose"] if self.verbose else []),
                    *scope,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last patch, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    @contextlib.contextmanager
    def running(self) -> Iterator[Controller]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
