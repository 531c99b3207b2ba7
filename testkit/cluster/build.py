"""The cluster's binaries, compiled from Go modules through the module proxy and cached by version.

Kubernetes cannot be ``go install``-ed: k8s.io/kubernetes' go.mod replaces each of its staging
modules (k8s.io/api, k8s.io/client-go, ...) by a ``./staging/...`` path, which a module zip does
not contain.  The build therefore happens in a small module of our own that requires
k8s.io/kubernetes and maps each of those staging modules to its published release, v0.X.Y for
Kubernetes v1.X.Y; the list is read from k8s.io/kubernetes' own go.mod, so it follows the version.
etcd's server module is built the same way (its go.mod has replaces of its own, for the repo's
other modules).

A binary lands in ``<cache>/<component>-<version>/bin/`` (``SANDBOX_K8S_CACHE``, default
``~/.cache/mini-jupyter-sandbox/k8s``) only once its build succeeded; concurrent builders wait for
each other.  A second run reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
# The node's runtime and the cluster's add-ons: each a plain ``go install`` of a published module.
CONTAINERD = ("github.com/containerd/containerd/v2", "v2.4.2")
RUNC = ("github.com/opencontainers/runc", "v1.5.2")
COREDNS = ("github.com/coredns/coredns", "v1.14.7")
HELM = ("helm.sh/helm/v3", "v3.22.0")
# v3.7 replaces a nested module by a local path, which a module zip leaves out; v3.6 does not.
TRAEFIK = ("github.com/traefik/traefik/v3", "v3.6.12")
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# Kubernetes' own release builds: no cgo, SELinux support compiled in, test-only code left out.
KUBERNETES_TAGS = "selinux,notest,grpcnotrace"


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the go command's output."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "mini-jupyter-sandbox" / "k8s"
    return Path(os.environ.get("SANDBOX_K8S_CACHE", default))


def kubernetes_binary(name: str, version: str = KUBERNETES_VERSION) -> Path:
    """``name`` (one of ``KUBERNETES_COMMANDS``) of Kubernetes ``version``, built on first use."""
    if name not in KUBERNETES_COMMANDS:
        raise ValueError(f"not a Kubernetes command this project builds: {name!r}")
    target = cache_dir() / f"{name}-{version}" / "bin" / name
    return _cached(target, lambda work: _build_kubernetes(work, name, version, target))


def etcd_binary(version: str = ETCD_VERSION) -> Path:
    """etcd ``version``'s server, built on first use (Debian's etcd 3.4.23 predates the watch
    progress requests Kubernetes >= 1.31 needs)."""
    target = cache_dir() / f"etcd-{version}" / "bin" / "etcd"
    return _cached(target, lambda work: _build_etcd(work, version, target))


def containerd_binaries() -> Path:
    """containerd, its runc shim and ``ctr``; returns their directory."""
    module, version = CONTAINERD
    commands = ("containerd", "containerd-shim-runc-v2", "ctr")
    flags = f"-s -w -X {module}/version.Version={version}"
    return go_install("containerd", version, [f"{module}/cmd/{c}" for c in commands], flags)


def runc_binary() -> Path:
    """runc with seccomp (cgo, against Debian's libseccomp-dev)."""
    module, version = RUNC
    flags = f"-s -w -X main.version={version.removeprefix('v')}"
    bin_dir = go_install("runc", version, [module], flags, cgo=True, tags="seccomp")
    return bin_dir / "runc"


def coredns_binary() -> Path:
    module, version = COREDNS
    return go_install("coredns", version, [module]) / "coredns"


def helm_binary() -> Path:
    module, version = HELM
    flags = f"-s -w -X helm.sh/helm/v3/internal/version.version={version}"
    return go_install("helm", version, [f"{module}/cmd/helm"], flags) / "helm"


def traefik_binary() -> Path:
    """The ingress controller."""
    module, version = TRAEFIK
    flags = f"-s -w -X {module}/pkg/version.Version={version}"
    return go_build_module("traefik", module, version, [f"{module}/cmd/traefik"], flags) / "traefik"


def pause_binary() -> Path:
    """The pod sandbox's process: this project's own ``pause`` (testkit/cluster/pause)."""
    source = Path(__file__).parent / "pause" / "main.go"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = cache_dir() / f"pause-{digest}" / "bin" / "pause"

    def build_pause(work: Path) -> None:
        partial = target.with_suffix(".partial")
        _go(["build", "-ldflags", "-s -w", "-o", str(partial), str(source)], work)
        partial.rename(target)

    return _cached(target, build_pause)


def go_install(
    component: str,
    version: str,
    packages: list[str],
    ldflags: str = "-s -w",
    cgo: bool = False,
    tags: str = "",
) -> Path:
    """``go install`` of ``packages`` (one module, at ``version``) into the cache; returns the
    directory holding the commands, built on first use."""
    bin_dir = cache_dir() / f"{component}-{version}" / "bin"
    names = [_command_name(package) for package in packages]

    def install(work: Path) -> None:
        staging = work / "bin"
        args = ["install", "-ldflags", ldflags] + (["-tags", tags] if tags else [])
        _go(
            [*args, *[f"{package}@{version}" for package in packages]],
            work,
            env={"GOBIN": str(staging), "CGO_ENABLED": "1" if cgo else "0"},
        )
        for name in names:
            (staging / name).rename(bin_dir / name)

    # The last command to land marks the install complete (each rename is atomic).
    _cached(bin_dir / names[-1], install)
    return bin_dir


def go_build_module(
    component: str, module: str, version: str, packages: list[str], ldflags: str = "-s -w"
) -> Path:
    """Like :func:`go_install`, for a module whose go.mod has replace directives (which
    ``go install`` refuses): a wrapper module requires it and repeats its replacements."""
    bin_dir = cache_dir() / f"{component}-{version}" / "bin"
    names = [_command_name(package) for package in packages]

    def build_wrapped(work: Path) -> None:
        (work / "go.mod").write_text("module mini-jupyter-sandbox.local/probe\n\ngo 1.26.0\n")
        info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], work))
        gomod = json.loads(_go(["mod", "edit", "-json", info["GoMod"]], work))
        _wrapper(work, component, {module: version}, packages)
        for replace in gomod.get("Replace") or []:
            old, new = replace["Old"], replace["New"]
            if "Version" not in new:
                raise BuildError(f"{module} replaces {old['Path']} by a local path: {new['Path']}")
            source = old["Path"] + (f"@{old['Version']}" if "Version" in old else "")
            _go(["mod", "edit", f"-replace={source}={new['Path']}@{new['Version']}"], work)
        _go(["mod", "tidy"], work)
        staging = work / "bin"
        _go(["build", "-ldflags", ldflags, "-o", f"{staging}/", *packages], work)
        for name in names:
            (staging / name).rename(bin_dir / name)

    _cached(bin_dir / names[-1], build_wrapped)
    return bin_dir


def _command_name(package: str) -> str:
    """The file ``go install`` writes: the last path element, or the one before a major version
    suffix (``…/kube-router/v2`` installs ``kube-router``)."""
    parts = package.split("/")
    return parts[-2] if re.fullmatch(r"v\d+", parts[-1]) else parts[-1]


def _cached(target: Path, build: object) -> Path:
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            with tempfile.TemporaryDirectory(prefix="k8s-build-") as work:
                started = time.monotonic()
                build(Path(work))  # type: ignore[operator]
                print(f"built {target} in {time.monotonic() - started:.0f}s", flush=True)
    return target


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env={
            **os.environ,
            "GOFLAGS": "-trimpath -buildvcs=false",
            "CGO_ENABLED": "0",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{result.stderr[-4000:]}")
    return result.stdout


def staging_replacements(version: str, work: Path) -> dict[str, str]:
    """Each module k8s.io/kubernetes ``version`` replaces by a ./staging path, mapped to its
    published version (v1.36.3 -> v0.36.3)."""
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], work))
    gomod = json.loads(_go(["mod", "edit", "-json", info["GoMod"]], work))
    published = "v0" + version[version.index(".") :]
    return {
        replace["Old"]["Path"]: published
        for replace in gomod.get("Replace") or []
        if replace["New"]["Path"].startswith("./staging/")
    }


def _wrapper(work: Path, module: str, requires: dict[str, str], tools: list[str]) -> None:
    (work / "go.mod").write_text(f"module mini-jupyter-sandbox.local/{module}\n\ngo 1.26.0\n")
    for path, version in requires.items():
        _go(["mod", "edit", f"-require={path}@{version}"], work)
    for tool in tools:
        _go(["mod", "edit", f"-tool={tool}"], work)


def _build_kubernetes(work: Path, name: str, version: str, target: Path) -> None:
    (work / "go.mod").write_text("module mini-jupyter-sandbox.local/probe\n\ngo 1.26.0\n")
    replacements = staging_replacements(version, work)
    _wrapper(work, "kubernetes", {"k8s.io/kubernetes": version}, [f"k8s.io/kubernetes/cmd/{name}"])
    for path, published in replacements.items():
        _go(["mod", "edit", f"-replace={path}={path}@{published}"], work)
    _go(["mod", "tidy"], work)
    major, minor = version.removeprefix("v").split(".")[:2]
    built = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate={built}",
        ]
    partial = target.with_suffix(".partial")
    _go(
        [
            "build",
            "-tags",
            KUBERNETES_TAGS,
            "-ldflags",
            " ".join(flags),
            "-o",
            str(partial),
            f"k8s.io/kubernetes/cmd/{name}",
        ],
        work,
    )
    partial.rename(target)


def _build_etcd(work: Path, version: str, target: Path) -> None:
    _wrapper(work, "etcd", {"go.etcd.io/etcd/server/v3": version}, ["go.etcd.io/etcd/server/v3"])
    _go(["mod", "tidy"], work)
    partial = target.with_suffix(".partial")
    flags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={version}"
    _go(["build", "-ldflags", flags, "-o", str(partial), "go.etcd.io/etcd/server/v3"], work)
    partial.rename(target)
