"""The warm pool's rules, free of Enterprise Gateway: its settings, which start requests a
pooled kernel can serve (and why not), and the code a claim runs inside the kernel.

Used by ``sandbox_gateway.pool.manager``; tested on their own in ``tests/unit/gateway``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from sandbox_gateway.launchers.rules import request_variables

_SPEC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What shapes the container or pod, and the reason a request setting it goes cold.
CONTAINER_VARS: Final = {
    "KERNEL_EXECUTOR_IMAGE": "image",
    "KERNEL_UID": "identity",
    "KERNEL_GID": "identity",
    "KERNEL_NAMESPACE": "placement",
    "KERNEL_SERVICE_ACCOUNT_NAME": "placement",
    "KERNEL_POD_NAME": "placement",
    "KERNEL_VOLUMES": "mounts",
    "KERNEL_VOLUME_MOUNTS": "mounts",
}
RESOURCE_PREFIXES: Final = ("KERNEL_CPUS", "KERNEL_MEMORY", "KERNEL_GPUS")


class SettingsError(ValueError):
    """A pool setting is invalid; the gateway stops with this message."""


@dataclass(frozen=True)
class PoolSettings:
    sizes: Mapping[str, int]
    max_age: float = 3600.0
    check_interval: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PoolSettings:
        sizes: dict[str, int] = {}
        for item in env.get("SANDBOX_POOL", "").split(","):
            if not item.strip():
                continue
            name, sep, size = (part.strip() for part in item.partition("="))
            if not sep or not _SPEC_NAME.match(name) or not size.isdigit():
                raise SettingsError(
                    f"SANDBOX_POOL: expected kernelspec=size pairs (e.g. python3=2), got {item!r}"
                )
            if name in sizes:
                raise SettingsError(f"SANDBOX_POOL names {name!r} twice")
            sizes[name] = int(size)
        return cls(
            sizes={name: size for name, size in sizes.items() if size > 0},
            max_age=_seconds(env, "SANDBOX_POOL_MAX_AGE", 3600.0),
            check_interval=_seconds(env, "SANDBOX_POOL_CHECK_INTERVAL", 10.0),
        )

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{name} must be a number of seconds > 0, got {text!r}")
    return value


def cold_reason(
    env: Mapping[str, str], pooled_env: Mapping[str, str], pooled_image: str | None
) -> str | None:
    """Why a start request with ``env`` cannot take a kernel launched with ``pooled_env`` and
    ``pooled_image`` (None: it can).  A value the pooled kernels were launched with anyway (one
    the gateway passes every kernel, such as its KERNEL_NAMESPACE) changes nothing."""
    image = env.get("KERNEL_IMAGE")
    if image and image != (pooled_env.get("KERNEL_IMAGE") or pooled_image):
        return "image"
    for name, value in env.items():
        if value == pooled_env.get(name):
            continue
        if name.startswith(RESOURCE_PREFIXES):
            return "resources"
        if name in CONTAINER_VARS:
            return CONTAINER_VARS[name]
    return None


def kernel_variables(
    env: Mapping[str, str],
    kernel_id: str,
    user: str,
    *,
    working_dir: bool = True,
    client_envs: Collection[str] = (),
) -> dict[str, str]:
    """The variables a cold start would put in the kernel's environment from this request: the
    launchers' rule (``launchers.rules.request_variables``) for its ``KERNEL_*`` variables and
    those it may set besides, ``client_envs`` (the kernelspec's ``SANDBOX_CLIENT_ENVS``).
    ``working_dir=False``: Enterprise Gateway drops ``KERNEL_WORKING_DIR`` for this kernel."""
    variables = request_variables(env, client_envs)
    if not working_dir:
        variables.pop("KERNEL_WORKING_DIR", None)
    variables.update(KERNEL_ID=kernel_id, KERNEL_USERNAME=user)
    return variables


def claim_code(variables: Mapping[str, str], language: str = "python") -> str:
    """Code run (silently) in a claimed kernel of ``language`` (its kernelspec's): its
    environment, then its working directory if that exists there.  Every value is written as a
    string literal of that language, so no value can become code; the names are environment
    variable names (``launchers.rules``), never quoted.  Raises ValueError for a language the
    pool cannot claim a kernel of."""
    workdir = variables.get("KERNEL_WORKING_DIR")
    key = language.lower()
    if key == "python":
        # repr() of a dict of str is a literal.
        lines = ["import os as _sandbox_os", f"_sandbox_os.environ.update({dict(variables)!r})"]
        if workdir:
            lines.append(f"if _sandbox_os.path.isdir({workdir!r}): _sandbox_os.chdir({workdir!r})")
        lines.append("del _sandbox_os")
    elif key == "bash":
        lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
        if workdir:
            lines.append(f"if [ -d {shlex.quote(workdir)} ]; then cd {shlex.quote(workdir)}; fi")
        # One command line: bash_kernel pays ~50 ms per line it sends to bash.
        return "; ".join(lines)
    elif key in ("javascript", "typescript"):
        # JSON strings are JavaScript string literals.
        lines = [
            f"Deno.env.set({json.dumps(name)}, {json.dumps(value)});"
            for name, value in variables.items()
        ]
        if workdir:
            lines.append(f"try {{ Deno.chdir({json.dumps(workdir)}); }} catch {{}}")
    elif key == "r":
        # R reads JSON's escapes but \/ (never written by json.dumps); non-ASCII stays UTF-8.
        lines = [
            f"Sys.setenv({name} = {json.dumps(value, ensure_ascii=False)})"
            for name, value in variables.items()
        ]
        if workdir:
            path = json.dumps(workdir, ensure_ascii=False)
            lines.append(f"if (dir.exists({path})) setwd({path})")
        lines.append("invisible(NULL)")
    else:
        raise ValueError(f"the warm pool cannot claim a kernel of language {language!r}")
    return "\n".join(lines)


def container_names(env: Mapping[str, str], reason: str) -> str:
    if reason == "resources":
        return ", ".join(sorted(n for n in env if n.startswith(RESOURCE_PREFIXES)))
    return ", ".join(sorted(n for n, r in CONTAINER_VARS.items() if r == reason and n in env))
