"""Start one kernel as a pod in the kernel namespace (run by Enterprise Gateway for each kernel).

Enterprise Gateway's KubernetesProcessProxy runs a kernelspec's ``argv`` inside the gateway pod
and then waits for a pod labelled ``kernel_id=<id>,component=kernel`` in ``KERNEL_NAMESPACE``
to return the kernel's connection info to the gateway's response address. This launcher renders
the chart's pod template (``--pod-template``, the kernelspec's ``scripts/kernel-pod.yaml.j2``)
and creates that pod. It replaces EG's stock ``launch_kubernetes.py`` because that one

* copies its whole environment into the pod - and EG 3.3 gives a launcher the gateway's *entire*
  environment whenever a start request carries no ``env``, gateway token included;
* renders every ``KERNEL_*`` variable, which a client chooses, into the pod YAML unchecked, so a
  value with a quote and a newline could add fields to the pod.

Here the template receives a fixed set of keywords, each validated (pod name, kernel id, the
kernel's CPU and memory, the kernelspec's image from ``--image``); everything else in the pod
(namespace, identity, security context, volumes) is fixed by the chart. The kernel's
environment is an allowlist: what its bootstrap needs, the ``KERNEL_*`` variables (set by the
client or by EG, never secret) except those that steer the gateway or a launcher, and the client
variables named in ``SANDBOX_CLIENT_ENVS`` (from the kernelspec, i.e. the chart). That rule, and
the kernel id's, are the Docker launcher's too: ``sandbox_gateway.launchers.rules``.

Size of a kernel: one value per resource, used as both request and limit, so the scheduler
reserves everything a kernel may use and kernels never overcommit a node. The value is the
client's ``KERNEL_CPUS_LIMIT`` or ``KERNEL_CPUS`` (``KERNEL_MEMORY_LIMIT`` or ``KERNEL_MEMORY``);
when both are given they must be the same amount; when neither is, the chart's default (in the
pod template). A value that is not a Kubernetes quantity, is zero (which would mean "no limit"),
is finer than 1m CPU or one byte, or exceeds the chart's maximum (``--max-cpu`` /
``--max-memory``, from the kernelspec's argv, which no client can change) refuses the launch.

Egress (``--egress-service``, from the kernelspec when the chart runs the egress process): the
kernel's DNS server and proxy are the egress Service, by its cluster address. The launcher
resolves the Service's name in the gateway pod and gives the pod template that address
(``egress_address``, its ``dnsConfig``) and the kernel the proxy and CA variables
(``rules.egress_variables``). Every kernel gets them, listed or not: a warm kernel takes its
session's list at claim, and a kernel without one is answered no name and reaches nothing.

Only the standard library plus Jinja2 and PyYAML (both in the gateway's environment) are used;
the API server is called over HTTPS with the gateway's service account token. The gateway image
installs this package; the chart's kernelspecs run
``<launcherPython> -I -m sandbox_gateway.launchers.kubernetes --pod-template <path> ...``.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import jinja2
import yaml

from sandbox_gateway.launchers import rules

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Kubernetes quantities (cpu "500m", "0.5", "2"; memory "512Mi", "1G", "129e6").
QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[kMGTPE]|[eE][0-9]+|m)?$"
)
SUFFIXES = {
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A kernel pod's owner, in a label: the tenant that started it ("sandbox-pool" for a warm
# kernel until a claim relabels it, proxies.kubernetes).  Tenant names are valid label values.
OWNER_LABEL = "minisandbox.dev/kernel-username"
# A container image reference: [registry[:port]/]path[:tag][@digest], no spaces or quotes.
IMAGE_REFERENCE = re.compile(
    r"^[a-z0-9][a-z0-9._:/-]{0,254}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# Template keyword -> the client's variables for it (the limit's name wins), the smallest amount
# Kubernetes can express for it, and its unit in messages.
RESOURCES = {
    "cpu": (("KERNEL_CPUS_LIMIT", "KERNEL_CPUS"), Decimal("0.001"), "1m CPU"),
    "memory": (("KERNEL_MEMORY_LIMIT", "KERNEL_MEMORY"), Decimal(1), "one byte"),
}


class LaunchError(Exception):
    """The kernel cannot be launched; the message says why, in one line."""


class PodAPI(Protocol):
    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> None: ...


def quantity(name: str, text: str) -> Decimal:
    """The amount a Kubernetes quantity stands for (CPUs or bytes); ``name`` is for messages."""
    match = QUANTITY.match(text)
    if not match:
        raise LaunchError(f"{name}={text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:])
        # Far beyond any machine; kept out of Decimal's exponent range.
        return number * Decimal(10) ** exponent if exponent <= 30 else Decimal("Infinity")
    return number * SUFFIXES.get(suffix, Decimal(1))


def kernel_size(env: Mapping[str, str], maxima: Mapping[str, str]) -> dict[str, str]:
    """The client's CPU and memory, each checked; one value per resource, request = limit.

    A resource the client leaves unset is absent: the pod template's default applies.
    """
    size = {}
    for keyword, (names, smallest, unit) in RESOURCES.items():
        given = {name: env[name] for name in names if env.get(name)}
        if not given:
            continue
        amounts = {name: quantity(name, text) for name, text in given.items()}
        if len(set(amounts.values())) > 1:
            both = " and ".join(f"{name}={text!r}" for name, text in given.items())
            raise LaunchError(f"{both} differ: a kernel's request is its limit, so give one amount")
        name = next(iter(given))
        text, amount = given[name], amounts[name]
        if amount == 0:
            raise LaunchError(f"{name}={text!r} is refused: every kernel has a limit")
        if amount < smallest:
            raise LaunchError(f"{name}={text!r} is below {unit}, the smallest amount")
        largest = maxima[keyword]
        if amount > quantity(f"the chart's maximum {keyword}", largest):
            raise LaunchError(f"{name}={text!r} is above the largest kernel allowed ({largest})")
        size[keyword] = text
    return size


def template_keywords(env: Mapping[str, str], args: argparse.Namespace) -> dict[str, str]:
    """The only values the pod template sees, each checked."""
    kernel_id = args.kernel_id
    try:
        rules.check_kernel_id(kernel_id)
    except rules.RuleError as exc:
        raise LaunchError(str(exc)) from None
    pod_name = env.get("KERNEL_POD_NAME", "")
    if not DNS_LABEL.match(pod_name):
        raise LaunchError(f"invalid KERNEL_POD_NAME {pod_name!r}")
    if not IMAGE_REFERENCE.match(args.image):
        raise LaunchError(f"invalid --image {args.image!r}")
    keywords = {"kernel_id": kernel_id, "kernel_pod_name": pod_name, "kernelspec_image": args.image}
    keywords.update(kernel_size(env, {"cpu": args.max_cpu, "memory": args.max_memory}))
    if args.egress_service:
        keywords["egress_address"] = egress_address(args.egress_service)
    return keywords


def egress_address(service: str) -> str:
    """The IPv4 address of the egress Service ``service`` (a name, or already an address): a
    pod's ``dnsConfig`` takes addresses only."""
    try:
        return str(ipaddress.IPv4Address(service))
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(service, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise LaunchError(f"cannot resolve the egress Service {service!r}: {exc}") from None
    return str(found[0][4][0])


def kernel_environment(
    env: Mapping[str, str], args: argparse.Namespace, egress: str = ""
) -> list[dict[str, str]]:
    """The kernel container's environment: an allowlist, never the launcher's whole environment;
    ``egress``: the egress Service's address, when there is one."""
    client_envs = rules.client_env_names(env.get("SANDBOX_CLIENT_ENVS", ""))
    chosen = rules.request_variables(env, client_envs)
    chosen.update(
        {
            "KERNEL_ID": args.kernel_id,
            "RESPONSE_ADDRESS": args.response_address,
            "PUBLIC_KEY": args.public_key,
            "PORT_RANGE": args.port_range or "0..0",
        }
    )
    if args.kernel_class_name:
        chosen["KERNEL_CLASS_NAME"] = args.kernel_class_name
    if egress:
        chosen.update(rules.egress_variables(egress))
    return [{"name": name, "value": value} for name, value in sorted(chosen.items())]


def read_template(path: str) -> str:
    """The pod template's text (``--pod-template``), or a one-line reason it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchError(f"cannot read the pod template {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LaunchError(f"cannot read the pod template {path}: it is not UTF-8 text") from None


def render_pod(template: str, keywords: Mapping[str, str]) -> dict[str, Any]:
    environment = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # YAML, not HTML; values are validated above instead
        undefined=jinja2.Undefined,
    )
    try:
        rendered = environment.from_string(template).render(**keywords)
        documents = [d for d in yaml.safe_load_all(rendered) if d]
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        reason = (str(exc) or type(exc).__name__).splitlines()[0]  # one line in the log
        raise LaunchError(f"the pod template is invalid: {reason}") from None
    pods = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Pod"]
    if len(documents) != 1 or len(pods) != 1:
        raise LaunchError("the pod template must describe exactly one Pod")
    pod: dict[str, Any] = pods[0]
    return pod


def build_pod(template: str, env: Mapping[str, str], args: argparse.Namespace) -> dict[str, Any]:
    keywords = template_keywords(env, args)
    pod = render_pod(template, keywords)
    namespace = pod["metadata"]["namespace"]
    # The gateway looks for (and later deletes) the pod in KERNEL_NAMESPACE, which a client can
    # set: a pod created elsewhere would be orphaned, so refuse instead.
    if env.get("KERNEL_NAMESPACE", namespace) != namespace:
        raise LaunchError(f"kernels run only in namespace {namespace!r}")
    owner = env.get("KERNEL_USERNAME", "")
    if owner and LABEL_VALUE.match(owner):
        pod["metadata"].setdefault("labels", {})[OWNER_LABEL] = owner
    container = pod["spec"]["containers"][0]
    resources = container.get("resources") or {}
    if not resources.get("limits") or resources.get("requests") != resources["limits"]:
        raise LaunchError("the pod template must give the kernel requests equal to its limits")
    fixed = [e for e in container.get("env") or [] if e.get("name")]
    given = kernel_environment(env, args, keywords.get("egress_address", ""))
    names = {e["name"] for e in given}
    # The template's own variables stay unless the kernel's are the same names.
    container["env"] = [e for e in fixed if e["name"] not in names] + given
    return pod


class InClusterAPI:
    """The API server, reached with the pod's service account (what the gateway runs as)."""

    def __init__(self, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
        if not host:
            raise LaunchError("KUBERNETES_SERVICE_HOST is not set: not running in a pod?")
        self._host, self._port = host, port
        self._token = (sa_dir / "token").read_text().strip()
        self._tls = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> None:
        status, body = self._call("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        check_response(status, body)

    def label_pod(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        """Merge ``labels`` into a pod's (a JSON merge patch)."""
        status, body = self._call(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            {"metadata": {"labels": dict(labels)}},
            content_type="application/merge-patch+json",
        )
        if status != 200:
            raise LaunchError(f"labelling pod {name}: {status} {body[:300]}")

    def _call(
        self,
        method: str,
        path: str,
        document: Mapping[str, Any],
        content_type: str = "application/json",
    ) -> tuple[int, str]:
        connection = http.client.HTTPSConnection(
            self._host, self._port, context=self._tls, timeout=30
        )
        try:
            connection.request(
                method,
                path,
                body=json.dumps(document),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": content_type,
                    "Accept": "application/json",
                },
            )
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()


def check_response(status: int, body: str) -> None:
    """Accept a created pod or an existing one (EG retrying a kernel id); refuse the rest."""
    if status in (200, 201, 202):
        return
    try:
        reason = json.loads(body).get("reason", "")
        message = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        reason, message = "", body
    if status == 409 and reason == "AlreadyExists":
        return
    raise LaunchError(f"the API server refused the kernel pod ({status}): {message}")


def launch(
    args: argparse.Namespace, env: Mapping[str, str], api: PodAPI, template: str
) -> dict[str, Any]:
    """Create the kernel's pod from the pod template's text; returns the pod."""
    pod = build_pod(template, env, args)
    api.create_pod(pod["metadata"]["namespace"], pod)
    return pod


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--port-range", default="0..0")
    parser.add_argument("--response-address", required=True)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--kernel-class-name", default="")
    # The chart's kernel pod template (Jinja), mounted from the kernelspec ConfigMap.
    parser.add_argument("--pod-template", required=True)
    # The kernelspec's kernel image (a client's KERNEL_IMAGE is never used).
    parser.add_argument("--image", required=True)
    # The largest kernel (the kernel namespace's LimitRange maximum), from the kernelspec.
    parser.add_argument("--max-cpu", required=True)
    parser.add_argument("--max-memory", required=True)
    # The egress Service's host name, when the chart runs the egress process.
    parser.add_argument("--egress-service", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # Before the API server: a template that cannot be read is said so, in a pod or not.
        template = read_template(args.pod_template)
        launch(args, os.environ, InClusterAPI(), template)
    except (LaunchError, OSError) as exc:
        # One line on stderr (the gateway's log); the environment is never printed.
        print(f"launch_kubernetes: kernel {args.kernel_id}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
