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
import json
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
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
