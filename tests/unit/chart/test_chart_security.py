"""What users and operators rely on: hardening, isolation, RBAC, storage, tokens, wiring."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from chart_testlib import (
    CHART_DIR,
    NAMESPACE,
    FakeKubeAPI,
    ci_scenarios,
    cluster_render,
    find,
    kernel_images,
    kernel_pod,
    load_values,
    one,
    pod_specs,
    render_docs,
)

pytestmark = pytest.mark.unit

SCENARIOS = ci_scenarios()
IDS = [p.name.removesuffix("-values.yaml") for p in SCENARIOS]
KERNEL_NS = f"{NAMESPACE}-kernels"
METADATA_IP = ipaddress.ip_address("169.254.169.254")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- pod hardening ---------------------------------------------------------------------------


def assert_hardened(name: str, spec: dict[str, Any]) -> None:
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True, name
    assert pod_sc.get("runAsUser", 0) > 0, name
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
    for c in _containers(spec):
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("runAsUser", 1) != 0, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged", False) is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert set(c.get("resources", {}).get(kind, {})) >= {"cpu", "memory"}, f"{where} {kind}"
    for volume in spec.get("volumes", []):
        assert "hostPath" not in volume, f"{name} mounts a host path"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_every_pod_is_hardened(scenario: Path) -> None:
    specs = pod_specs(render_docs(load_values(scenario)))
    assert "kernel-pod.yaml.j2" in specs
    for name, spec in specs.items():
        assert_hardened(name, spec)


def test_hardening_check_catches_a_weak_pod() -> None:
    spec = pod_specs(render_docs())["kernel-pod.yaml.j2"]
    spec["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    with pytest.raises(AssertionError):
        assert_hardened("weakened", spec)


def test_kernel_pod_cannot_be_redirected_by_client_variables() -> None:
    # KERNEL_* variables come from the client; none may move the pod, swap its image or make it
    # root. The template fixes all of those.
    docs = render_docs()
    pod = kernel_pod(
        docs,
        kernel_namespace="kube-system",
        kernel_image="evil/miner",
        kernel_uid=0,
        kernel_gid=0,
        kernel_service_account_name="admin",
        kernel_working_dir="/",
    )
    assert pod["metadata"]["namespace"] == KERNEL_NS
    container = pod["spec"]["containers"][0]
    assert container["image"] == "mini-jupyter-sandbox/kernel-python:0.1.0"
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert pod["spec"]["serviceAccountName"] == "demo-mini-jupyter-sandbox-kernel"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["enableServiceLinks"] is False
    assert pod["spec"]["restartPolicy"] == "Never"
    # The labels the gateway finds its kernel by.
    assert pod["metadata"]["labels"]["kernel_id"] == "8f0f5c9e-2b65-4d5e-9d65-0b3a3c1d7e11"
    assert pod["metadata"]["labels"]["component"] == "kernel"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_kernel_requests_equal_limits_whatever_the_size(scenario: Path) -> None:
    docs = render_docs(load_values(scenario))
    for asked in ({}, {"cpu": "500m"}, {"memory": "3Gi"}, {"cpu": "2", "memory": "129e6"}):
        resources = kernel_pod(docs, **asked)["spec"]["containers"][0]["resources"]
        assert resources["requests"] == resources["limits"], (scenario.name, asked)
        assert set(resources["limits"]) == {"cpu", "memory"}


def test_kernel_size_defaults_to_the_chart_and_follows_the_launcher() -> None:
    docs = render_docs()
    default = kernel_pod(docs)["spec"]["containers"][0]["resources"]
    assert default == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    asked = kernel_pod(docs, cpu="500m", memory="2Gi")["spec"]["containers"][0]
    assert asked["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "500m", "memory": "2Gi"},
    }
    bigger = render_docs(load_values(CHART_DIR / "ci" / "kernel-resources-values.yaml"))
    assert kernel_pod(bigger)["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "4Gi",
    }


def test_kernel_namespace_caps_requests_and_limits() -> None:
    docs = render_docs()
    limit_range = one(docs, "LimitRange")
    assert limit_range["metadata"]["namespace"] == KERNEL_NS
    # maxLimitRequestRatio 1: the API server refuses any container there whose limit exceeds
    # its request, whoever made the pod.
    assert limit_range["spec"]["limits"] == [
        {
            "type": "Container",
            "max": {"cpu": "2", "memory": "4Gi"},
            "maxLimitRequestRatio": {"cpu": "1", "memory": "1"},
            "default": {"cpu": "1", "memory": "1Gi"},
            "defaultRequest": {"cpu": "1", "memory": "1Gi"},
        }
    ]
    quota = one(docs, "ResourceQuota")
    assert quota["metadata"]["namespace"] == KERNEL_NS
    assert quota["spec"]["hard"] == {
        "pods": "50",
        "requests.cpu": "50",
        "limits.cpu": "50",
        "requests.memory": "100Gi",
        "limits.memory": "100Gi",
    }
    tuned = render_docs(load_values(CHART_DIR / "ci" / "kernel-resources-values.yaml"))
    assert one(tuned, "ResourceQuota")["spec"]["hard"] == {
        "pods": "10",
        "requests.cpu": "20",
        "limits.cpu": "20",
        "requests.memory": "40Gi",
        "limits.memory": "40Gi",
    }
    assert one(tuned, "LimitRange")["spec"]["limits"][0]["max"] == {"cpu": "4", "memory": "8Gi"}


def test_shared_namespace_keeps_the_maximum_but_not_the_ratio() -> None:
    # Kernels in the release namespace: a ratio of 1 would refuse the chart's own pods there
    # (requests below limits); the launcher still gives kernels requests equal to limits.
    docs = render_docs(load_values(CHART_DIR / "ci" / "dynamic-storage-values.yaml"))
    (limits,) = one(docs, "LimitRange")["spec"]["limits"]
    assert one(docs, "LimitRange")["metadata"]["namespace"] == NAMESPACE
    assert "maxLimitRequestRatio" not in limits
    assert limits["max"] == {"cpu": "2", "memory": "4Gi"}
    for name, spec in pod_specs(docs).items():
        if name != "kernel-pod.yaml.j2":
            resources = spec["containers"][0]["resources"]
            assert resources["requests"] != resources["limits"], name


def test_kernel_namespace_enforces_pod_security_restricted() -> None:
    ns = one(render_docs(), "Namespace")
    assert ns["metadata"]["name"] == KERNEL_NS
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_runtime_class_is_set_only_when_asked() -> None:
    assert "runtimeClassName" not in kernel_pod(render_docs())["spec"]
    for scenario, runtime in (("gvisor", "gvisor"), ("kata", "kata-qemu")):
        docs = render_docs(load_values(CHART_DIR / "ci" / f"{scenario}-values.yaml"))
        assert kernel_pod(docs)["spec"]["runtimeClassName"] == runtime


# --- network policies ------------------------------------------------------------------------


def ip_allowed_by_egress(policy: dict[str, Any], ip: ipaddress.IPv4Address) -> bool:
    """Whether any egress rule of ``policy`` lets a selected pod reach ``ip``.

    Pod/namespace selectors match pod IPs only, never an off-cluster address such as the
    metadata endpoint; only ipBlock peers (and a rule with no peers at all) can allow it.
    """
    if "Egress" not in policy["spec"].get("policyTypes", []):
        return True
    for rule in policy["spec"].get("egress", []):
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            block = peer.get("ipBlock")
            if (
                block
                and ip in ipaddress.ip_network(block["cidr"])
                and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
            ):
                return True
    return False


def kernel_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(
        [d for d in find(docs, "NetworkPolicy") if d["metadata"]["namespace"] == KERNEL_NS],
        "NetworkPolicy",
    )


@pytest.mark.parametrize("scenario", ["default", "public-internet-egress"])
def test_kernel_policy_blocks_cloud_metadata_and_private_ranges(scenario: str) -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / f"{scenario}-values.yaml"))
    policy = kernel_policy(docs)
    assert policy["spec"]["podSelector"] == {}, "every pod of the kernel namespace is covered"
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for address in (
        "169.254.169.254",
        "10.1.2.3",
        "172.20.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "100.100.100.200",
    ):
        assert not ip_allowed_by_egress(policy, ipaddress.ip_address(address)), address


def test_public_internet_egress_opens_public_addresses_only() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "public-internet-egress-values.yaml"))
    policy = kernel_policy(docs)
    assert ip_allowed_by_egress(policy, ipaddress.ip_address("151.101.0.223"))
    blocks = [p["ipBlock"] for r in policy["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert blocks and all("169.254.169.254/32" in b["except"] for b in blocks)
    # Dropping the exception would open the metadata endpoint: the analysis notices.
    blocks[0]["except"] = [e for e in blocks[0]["except"] if not e.startswith("169.254")]
    assert ip_allowed_by_egress(policy, METADATA_IP)


def test_kernel_policy_is_exactly_gateway_in_and_response_port_and_dns_out() -> None:
    docs = render_docs()
    gateway_labels = one(docs, "Deployment", "-gateway")["spec"]["selector"]["matchLabels"]
    gateway_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
        "podSelector": {"matchLabels": gateway_labels},
    }
    assert kernel_policy(docs)["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [gateway_peer]}],
        "egress": [
            {"to": [gateway_peer], "ports": [{"port": 8877, "protocol": "TCP"}]},
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                        },
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            },
        ],
    }


def test_the_response_port_is_the_only_gateway_port_kernels_reach() -> None:
    docs = render_docs()
    container = docs_container(docs, "-gateway")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8889, "response": 8877, "metrics": 9464}
    egress_ports = [
        port["port"]
        for rule in kernel_policy(docs)["spec"]["egress"]
        for peer in rule["to"]
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "gateway"
        for port in rule["ports"]
    ]
    assert egress_ports == [ports["response"]]


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (absent or {} = everything) matches ``labels``."""
    if not selector:
        return True
    assert set(selector) <= {"matchLabels"}, f"unexpected selector {selector}"
    return bool(selector["matchLabels"].items() <= labels.items())


def _peer_admits(peer: dict[str, Any], policy_ns: str, pod_ns: str, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer matches a pod in ``pod_ns`` with ``labels``."""
    assert "ipBlock" not in peer, "an ipBlock peer could match pod addresses"
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": pod_ns}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif pod_ns != policy_ns:
        return False
    return _selects(peer.get("podSelector"), labels)


@pytest.mark.parametrize("scenario", ["default", "dynamic-storage", "existing-kernel-namespace"])
def test_no_policy_lets_a_kernel_in_but_the_gateways_response_port(scenario: str) -> None:
    # NetworkPolicies add up: one rule anywhere admitting kernel pods would open that service.
    docs = render_docs(load_values(CHART_DIR / "ci" / f"{scenario}-values.yaml"))
    kernel = kernel_pod(docs)
    kernel_ns, labels = kernel["metadata"]["namespace"], kernel["metadata"]["labels"]
    admitted = []
    for policy in find(docs, "NetworkPolicy"):
        policy_ns = policy["metadata"]["namespace"]
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers or any(_peer_admits(p, policy_ns, kernel_ns, labels) for p in peers):
                admitted.append((policy["metadata"]["name"], rule.get("ports")))
    assert admitted == [
        ("demo-mini-jupyter-sandbox-gateway", [{"port": "response", "protocol": "TCP"}])
    ]


@pytest.mark.parametrize("scenario", ["default", "dynamic-storage", "existing-kernel-namespace"])
def test_kernels_admit_only_the_gateway_and_one_policy_governs_them(scenario: str) -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / f"{scenario}-values.yaml"))
    kernel = kernel_pod(docs)
    kernel_ns, labels = kernel["metadata"]["namespace"], kernel["metadata"]["labels"]
    governing = [
        p
        for p in find(docs, "NetworkPolicy")
        if p["metadata"]["namespace"] == kernel_ns and _selects(p["spec"]["podSelector"], labels)
    ]
    assert [p["metadata"]["name"] for p in governing] == ["demo-mini-jupyter-sandbox-kernel"]
    (policy,) = governing
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    gateway = one(docs, "Deployment", "-gateway")["spec"]["template"]["metadata"]["labels"]
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            # Every peer is the gateway in the release namespace; no kernel matches any of them.
            assert _peer_admits(peer, kernel_ns, NAMESPACE, gateway)
            assert not _peer_admits(peer, kernel_ns, kernel_ns, labels)
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            assert not _peer_admits(peer, kernel_ns, kernel_ns, labels), "kernel to kernel"


def test_the_policy_checks_notice_an_opening() -> None:
    docs = render_docs()
    kernel = kernel_pod(docs)
    labels = kernel["metadata"]["labels"]
    # A peer naming the kernel namespace with no pod selector would admit every kernel.
    assert _peer_admits(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KERNEL_NS}}},
        NAMESPACE,
        KERNEL_NS,
        labels,
    )
    assert not _peer_admits(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "notebook"}}},
        NAMESPACE,
        NAMESPACE,
        labels,
    )


def test_network_policies_can_be_disabled() -> None:
    assert find(render_docs(), "NetworkPolicy")
    disabled = render_docs(load_values(CHART_DIR / "ci" / "networkpolicy-disabled-values.yaml"))
    assert not find(disabled, "NetworkPolicy")


def test_shared_kernel_namespace_policy_selects_kernels_only() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "dynamic-storage-values.yaml"))
    policy = one(find(docs, "NetworkPolicy"), "NetworkPolicy", "-kernel")
    # In the release namespace "{}" would cut off the gateway and the notebook too.
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "kernel"


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_nothing_is_bound_to_cluster_admin_or_wildcards(scenario: Path) -> None:
    docs = render_docs(load_values(scenario))
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit"}, binding
    for role in find(docs, "ClusterRole") + find(docs, "Role"):
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not {"secrets", "pods/exec", "nodes"} & set(rule.get("resources", [])), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_gateway_rights_are_namespace_scoped_to_kernel_pods() -> None:
    docs = render_docs()
    gateway_sa = one(docs, "ServiceAccount", "-gateway")["metadata"]["name"]
    bound = [
        b
        for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
        if any(s["name"] == gateway_sa for s in b["subjects"])
    ]
    assert [b["kind"] for b in bound] == ["RoleBinding"]
    assert bound[0]["metadata"]["namespace"] == KERNEL_NS
    role = one(docs, "Role", "-gateway-kernels")
    assert role["metadata"]["namespace"] == KERNEL_NS
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["list", "create", "delete", "patch"],
        }
    ]


def test_eg_kernel_cluster_role_never_falls_back_to_cluster_admin() -> None:
    docs = render_docs()
    env = _env(one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0])
    # EG defaults EG_KERNEL_CLUSTER_ROLE to cluster-admin when it is unset.
    role_name = env["EG_KERNEL_CLUSTER_ROLE"]
    assert role_name != "cluster-admin"
    assert (
        one(docs, "ClusterRole", role_name.removeprefix("demo-mini-jupyter-sandbox"))["rules"] == []
    )
    # And EG is told to use one fixed namespace, so it never creates namespaces at all.
    assert env["KERNEL_NAMESPACE"] == KERNEL_NS
    assert env["EG_SHARED_NAMESPACE"] == "False"


def test_controller_rbac_covers_sessions_status_and_events() -> None:
    docs = render_docs()
    role = one(docs, "ClusterRole", "-sessions")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for needed in [
        ("minisandbox.dev", "sandboxsessions", "watch"),
        ("minisandbox.dev", "sandboxsessions", "patch"),
        ("minisandbox.dev", "sandboxsessions/status", "patch"),
        ("", "events", "create"),
    ]:
        assert needed in granted
    assert not {r for _, r, _ in granted} - {"sandboxsessions", "sandboxsessions/status", "events"}


def test_controller_can_be_limited_to_namespaces() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "watch-namespaces-values.yaml"))
    assert not find(docs, "ClusterRole", "-sessions")
    assert sorted(
        r["metadata"]["namespace"] for r in find(docs, "Role", "-controller-sessions")
    ) == ["team-a", "team-b"]
    command = one(docs, "Deployment", "-controller")["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert "--namespace=team-a" in command and "--all-namespaces" not in command
    default_command = one(render_docs(), "Deployment", "-controller")["spec"]["template"]["spec"][
        "containers"
    ][0]["command"]
    assert default_command[:2] == ["kopf", "run"] and "--all-namespaces" in default_command


def test_only_api_clients_get_a_service_account_token() -> None:
    docs = render_docs()
    accounts = {a["metadata"]["name"]: a for a in find(docs, "ServiceAccount")}
    for name, spec in pod_specs(docs).items():
        wants_token = name.endswith(("-gateway", "-controller"))
        assert spec.get("automountServiceAccountToken") is wants_token, name
        # Every pod has an account of its own (never the namespace's "default").
        account = accounts[spec["serviceAccountName"]]
        assert account.get("automountServiceAccountToken", True) is wants_token, name


# --- shared volume ---------------------------------------------------------------------------


def _claim_mounts(spec: dict[str, Any]) -> dict[str, str]:
    """claimName -> mount path, for every PVC volume mounted by the pod's containers."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return {
        claims[m["name"]]: m["mountPath"]
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in claims
    }


@pytest.mark.parametrize("scenario", ["default", "rwx-storage", "csi-storage", "dynamic-storage"])
def test_shared_volume_is_mounted_by_kernels_notebook_and_fileserver(scenario: str) -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / f"{scenario}-values.yaml"))
    specs = pod_specs(docs)
    mounts = {
        "kernel": _claim_mounts(specs["kernel-pod.yaml.j2"]),
        # The notebook's own home claim is its business (test_chart_notebook.py): only the
        # shared volume here.
        "notebook": {
            claim: path
            for claim, path in _claim_mounts(
                specs["Deployment/demo-mini-jupyter-sandbox-notebook"]
            ).items()
            if path == "/home/jovyan/shared-data"
        },
        "fileserver": _claim_mounts(specs["Deployment/demo-mini-jupyter-sandbox-fileserver"]),
    }
    assert list(mounts["kernel"].values()) == ["/data/shared"]
    assert list(mounts["notebook"].values()) == ["/home/jovyan/shared-data"]
    assert list(mounts["fileserver"].values()) == ["/data/shared"]
    assert _env(docs_container(docs, "-fileserver"))["SHARED_DATA_DIR"] == "/data/shared"

    claims = {
        (c["metadata"]["namespace"], c["metadata"]["name"]): c
        for c in find(docs, "PersistentVolumeClaim")
    }
    kernel_ns = kernel_pod(docs)["metadata"]["namespace"]
    kernel_claim = claims[(kernel_ns, *mounts["kernel"])]
    release_claim = claims[(NAMESPACE, *mounts["notebook"])]
    assert mounts["notebook"].keys() == mounts["fileserver"].keys()
    if kernel_claim is release_claim:
        assert scenario == "dynamic-storage"
        return
    # Two claims (one per namespace) must reach the same storage, or kernels and users would
    # see different files.
    volumes = {v["metadata"]["name"]: v for v in find(docs, "PersistentVolume")}
    kernel_pv, release_pv = (
        volumes[kernel_claim["spec"]["volumeName"]],
        volumes[release_claim["spec"]["volumeName"]],
    )
    assert kernel_pv is not release_pv

    def source(pv: dict[str, Any]) -> Any:
        return {k: v for k, v in pv["spec"].items() if k in ("hostPath", "nfs", "csi")}

    assert source(kernel_pv) == source(release_pv) != {}
    for pv, claim in ((kernel_pv, kernel_claim), (release_pv, release_claim)):
        assert pv["spec"]["claimRef"] == {
            "namespace": claim["metadata"]["namespace"],
            "name": claim["metadata"]["name"],
        }
        assert pv["spec"]["accessModes"] == claim["spec"]["accessModes"]


def docs_container(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment", suffix)["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_access_mode_is_configurable() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "rwx-storage-values.yaml"))
    shared = [c for c in find(docs, "PersistentVolumeClaim") if "-shared" in c["metadata"]["name"]]
    assert shared
    assert {tuple(c["spec"]["accessModes"]) for c in shared} == {("ReadWriteMany",)}


def test_dynamic_storage_with_a_dedicated_kernel_namespace_is_refused() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match="one claim in one namespace"):
        render_docs({"sharedVolume": {"backend": "dynamic"}})


# --- tokens ----------------------------------------------------------------------------------


def _token(docs: list[dict[str, Any]], component: str, key: str = "token") -> str:
    secret = one(docs, "Secret", f"-{component}-token")
    return base64.b64decode(secret["data"][key]).decode()


def _tenants(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway's tenants file, as the chart's Secret holds it."""
    tenants: dict[str, Any] = json.loads(_token(docs, "gateway", "tenants.json"))["tenants"]
    return tenants


def test_given_tokens_are_used_verbatim() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "given-tokens-values.yaml"))
    assert _token(docs, "gateway", "notebook") == "gw-0123456789abcdef0123456789abcdef"
    assert _tenants(docs)["notebook"]["token"] == "gw-0123456789abcdef0123456789abcdef"
    assert _token(docs, "notebook") == "nb-0123456789abcdef0123456789abcdef"
    assert _token(docs, "fileserver") == "fs-0123456789abcdef0123456789abcdef"


def test_generated_tokens_are_long_random_and_distinct() -> None:
    first, second = render_docs(), render_docs()
    tokens = [_token(first, "gateway", t) for t in ("notebook", "controller")]
    tokens += [_token(first, c) for c in ("notebook", "fileserver")]
    assert all(len(t) == 48 and t.isalnum() for t in tokens)
    assert len(set(tokens)) == 4
    # Offline there is no cluster to look up, so each fresh install gets a fresh token.
    assert _token(second, "gateway", "notebook") != tokens[0]


def test_existing_tokens_survive_an_upgrade() -> None:
    # Helm's own cluster-aware render: `lookup` asks the fake API server over HTTP for the
    # release's Secrets, as it would ask a real one during `helm upgrade`.
    with FakeKubeAPI() as api, cluster_render(api) as render_live:
        api.store_secret(
            NAMESPACE,
            "demo-mini-jupyter-sandbox-gateway-token",
            {"notebook": "kept-gw-notebook-token"},
        )
        api.store_secret(
            NAMESPACE, "demo-mini-jupyter-sandbox-fileserver-token", {"token": "kept-fs-token"}
        )
        upgraded = render_live()
        again = render_live()
        assert any(p.startswith("/api/v1/namespaces/sandbox/secrets/") for p in api.requests)
        kept = _token(upgraded, "gateway", "notebook")
        assert kept == _token(again, "gateway", "notebook") == "kept-gw-notebook-token"
        assert _tenants(upgraded)["notebook"]["token"] == "kept-gw-notebook-token"
        # The controller's token was not stored yet: generated now, and kept from then on.
        assert len(_token(upgraded, "gateway", "controller")) == 48
        assert _token(upgraded, "fileserver") == "kept-fs-token"
        # The notebook had no Secret yet: generated, since nothing was there to keep.
        assert len(_token(upgraded, "notebook")) == 48
        # A token given in values still wins over the stored one (deliberate rotation).
        given = {"tenants": {"notebook": {"token": "rotated-0123456789abcdef"}}}
        rotated = render_live({"gateway": {"auth": given}})
        assert _token(rotated, "gateway", "notebook") == "rotated-0123456789abcdef"


def test_existing_secrets_replace_the_chart_secrets() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "existing-secret-values.yaml"))
    assert not find(docs, "Secret")
    env = _env(docs_container(docs, "-fileserver"))
    assert env["FILE_SERVER_TOKEN"] == {
        "secretKeyRef": {"name": "sandbox-files-auth", "key": "bearer"}
    }
    gw = _env(docs_container(docs, "-gateway"))
    assert gw["SANDBOX_TENANTS_FILE"] == "/run/sandbox-tenants/tenants.json"
    volumes = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "tenants")["secret"]["secretName"] == (
        "sandbox-gateway-auth"
    )
    notebook = _env(docs_container(docs, "-notebook"))["JUPYTER_GATEWAY_AUTH_TOKEN"]
    assert notebook == {"secretKeyRef": {"name": "sandbox-gateway-auth", "key": "notebook"}}


def test_tokens_reach_their_consumers_from_secrets_only() -> None:
    docs = render_docs()
    secret = "demo-mini-jupyter-sandbox-gateway-token"
    gateway = _env(docs_container(docs, "-gateway"))
    assert "EG_AUTH_TOKEN" not in gateway  # every token is a tenant's
    assert gateway["SANDBOX_TENANTS_FILE"] == "/run/sandbox-tenants/tenants.json"
    pod = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    tenants_volume = next(v for v in pod["volumes"] if v["name"] == "tenants")
    # The gateway mounts the tenants file only, not the tokens beside it.
    assert tenants_volume["secret"] == {
        "secretName": secret,
        "defaultMode": 0o440,
        "items": [{"key": "tenants.json", "path": "tenants.json"}],
    }
    notebook_ref = {"secretKeyRef": {"name": secret, "key": "notebook"}}
    assert _env(docs_container(docs, "-notebook"))["JUPYTER_GATEWAY_AUTH_TOKEN"] == notebook_ref
    controller_ref = {"secretKeyRef": {"name": secret, "key": "controller"}}
    assert _env(docs_container(docs, "-controller"))["SANDBOX_GATEWAY_AUTH_TOKEN"] == (
        controller_ref
    )
    # Each consumer's token is its tenant's in the gateway's file; the controller's delegates.
    tenants = _tenants(docs)
    assert tenants["notebook"]["token"] == _token(docs, "gateway", "notebook")
    assert tenants["controller"] == {
        "token": _token(docs, "gateway", "controller"),
        "delegate": True,
    }
    assert sorted(tenants) == ["controller", "notebook"]
    # The gateway hands kernels only the variables it is told to: never a token.
    inherited = _env(docs_container(docs, "-gateway"))["EG_INHERITED_ENVS"].split(",")
    assert inherited == ["KERNEL_NAMESPACE"]
    assert "env" not in kernel_pod(docs)["spec"]["containers"][0] or all(
        "valueFrom" not in e for e in kernel_pod(docs)["spec"]["containers"][0]["env"]
    )


# --- wiring ----------------------------------------------------------------------------------


def test_gateway_environment_matches_enterprise_gateway() -> None:
    docs = render_docs()
    env = _env(docs_container(docs, "-gateway"))
    assert env["EG_PORT"] == env["KG_PORT"] == "8889"
    assert env["EG_RESPONSE_PORT"] == "8877"
    assert env["EG_NAMESPACE"] == NAMESPACE
    assert env["EG_DEFAULT_KERNEL_NAME"] == "python3"
    assert env["EG_LIST_KERNELS"] == "True"
    assert env["EG_MIRROR_WORKING_DIRS"] == "False"
    assert int(env["SANDBOX_CULL_IDLE_TIMEOUT"]) == 3600
    assert docs_container(docs, "-gateway")["command"] == ["jupyter", "sandbox-gateway"]
    args = docs_container(docs, "-gateway")["args"]
    assert "--config=/etc/sandbox-gateway/jupyter_enterprise_gateway_config.py" in args
    assert "--log-level=INFO" in args
    # Options EG 3.3 reads (it reads no EG_ALLOWED_KERNELS): only the chart's kernelspecs.
    assert "--KernelSpecManager.ensure_native_kernel=False" in args
    assert [a for a in args if a.startswith("--KernelSpecManager.whitelist=")] == [
        f"--KernelSpecManager.whitelist={name}" for name in SPEC_NAMES
    ]
    # Inheriting KERNEL_NAMESPACE is what keeps EG from creating namespaces per kernel.
    assert env["EG_INHERITED_ENVS"] == "KERNEL_NAMESPACE"
    # Sessions survive a gateway container restart on their own emptyDir.
    mounts = {m["name"]: m["mountPath"] for m in docs_container(docs, "-gateway")["volumeMounts"]}
    assert mounts["sessions"] == env["SANDBOX_SESSION_ROOT"]
    assert mounts["kernelspecs"] == "/opt/sandbox/share/jupyter/kernels"


SPEC_NAMES = ("python3", "sandbox-python", "bash", "javascript", "r")
SPEC_IMAGES = {
    name: f"mini-jupyter-sandbox/kernel-{image}:0.1.0"
    for name, image in {
        "python3": "python", "sandbox-python": "python", "bash": "bash",
        "javascript": "javascript", "r": "r",
    }.items()
}  # fmt: skip
SPEC_LANGUAGES = {
    "python3": "python", "sandbox-python": "python", "bash": "bash",
    "javascript": "typescript", "r": "R",
}  # fmt: skip


def test_every_kernelspec_gets_its_image_in_the_one_pod_template() -> None:
    docs = render_docs()
    for name, image in SPEC_IMAGES.items():
        pod = kernel_pod(docs, kernelspec_image=kernel_images(docs)[name])
        assert pod["spec"]["containers"][0]["image"] == image
        assert_hardened(name, pod["spec"])


def test_kernelspecs_are_kubernetes_launched() -> None:
    import importlib.util
    import json

    docs = render_docs()
    data = one(docs, "ConfigMap", "-kernelspecs")["data"]
    specs = {
        k.removesuffix(".kernel.json"): json.loads(v)
        for k, v in data.items()
        if k.endswith(".kernel.json")
    }
    assert set(specs) == set(SPEC_NAMES)
    for name, spec in specs.items():
        proxy = spec["metadata"]["process_proxy"]
        assert (
            proxy["class_name"]
            == "sandbox_gateway.proxies.kubernetes.SandboxKubernetesProcessProxy"
        )
        # Each kernelspec's own image, the same in the proxy's config and the launcher's argv.
        image = SPEC_IMAGES[name]
        assert proxy["config"]["image_name"] == image
        assert spec["argv"][spec["argv"].index("--image") + 1] == image
        assert spec["language"] == spec["env"]["KERNEL_LANGUAGE"] == SPEC_LANGUAGES[name]
        # The launcher is the gateway image's module; the argv names the pod template the
        # gateway mounts beside this kernelspec's kernel.json.
        assert spec["argv"][:6] == [
            "/opt/eg/bin/python",
            "-I",
            "-m",
            "sandbox_gateway.launchers.kubernetes",
            "--pod-template",
            f"/opt/sandbox/share/jupyter/kernels/{name}/scripts/kernel-pod.yaml.j2",
        ]
        assert "{response_address}" in spec["argv"]
        # That module is installed with the gateway's package (the one the gateway image holds).
        assert importlib.util.find_spec(spec["argv"][3]) is not None
    # The ConfigMap carries no launcher, only the kernelspecs and the pod template...
    assert set(data) == {f"{name}.kernel.json" for name in SPEC_NAMES} | {"kernel-pod.yaml.j2"}
    # ...and the gateway mounts exactly these.
    volumes = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["volumes"]
    (kernelspecs,) = [v for v in volumes if v["name"] == "kernelspecs"]
    assert {i["path"] for i in kernelspecs["configMap"]["items"]} == {
        f"{name}/{path}"
        for name in SPEC_NAMES
        for path in ("kernel.json", "scripts/kernel-pod.yaml.j2")
    }


def test_controller_publishes_the_public_gateway_urls() -> None:
    env = _env(docs_container(render_docs(), "-controller"))
    in_cluster = "http://demo-mini-jupyter-sandbox-gateway.sandbox.svc:8889"
    assert env["SANDBOX_GATEWAY_URL"] == env["SANDBOX_PUBLIC_GATEWAY_URL"] == in_cluster
    assert "SANDBOX_PUBLIC_WEBSOCKET_URL" not in env  # derived from the HTTP one
    docs = render_docs(load_values(CHART_DIR / "ci" / "ingress-values.yaml"))
    env = _env(docs_container(docs, "-controller"))
    assert env["SANDBOX_GATEWAY_URL"] == in_cluster
    assert env["SANDBOX_PUBLIC_GATEWAY_URL"] == "https://gateway.sandbox.example.com"
    assert env["SANDBOX_PUBLIC_WEBSOCKET_URL"] == "wss://gateway.sandbox.example.com"
    assert env["SANDBOX_METRICS_PORT"] == "8000"
    launch_timeout = int(_env(docs_container(docs, "-gateway"))["EG_KERNEL_LAUNCH_TIMEOUT"])
    assert float(env["SANDBOX_REQUEST_TIMEOUT_SECONDS"]) > launch_timeout


def test_kernelspec_choices_are_consistent() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match=r"is not one of kernels\.specs"):
        render_docs({"kernels": {"defaultKernelName": "r-kernel"}})
    spec = {
        "language": "python",
        "interruptMode": "",
        "lateOutputGrace": 0,
        "image": {"repository": "", "tag": ""},
    }
    twice = [{**spec, "name": "python3", "displayName": n} for n in ("a", "b")]
    with pytest.raises(helm_python.HelmRenderError, match="must be unique"):
        render_docs({"kernels": {"specs": twice}})


def test_notebook_uses_the_gateway() -> None:
    docs = render_docs()
    container = docs_container(docs, "-notebook")
    url = "http://demo-mini-jupyter-sandbox-gateway.sandbox.svc:8889"
    assert _env(container)["JUPYTER_GATEWAY_URL"] == url
    assert container["args"][:2] == [
        "--config=/etc/jupyter/jupyter_notebook_config.py",
        "--gateway-url=$(JUPYTER_GATEWAY_URL)",
    ]
    # The image's config reads NOTEBOOK_TOKEN; an empty one would mean no login at all.
    assert _env(container)["NOTEBOOK_TOKEN"] == {
        "secretKeyRef": {"name": "demo-mini-jupyter-sandbox-notebook-token", "key": "token"}
    }
    service = one(docs, "Service", "-gateway")
    assert service["spec"]["ports"][0]["port"] == 8889


def test_ingress_routes_to_existing_service_ports() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "ingress-values.yaml"))
    services = {
        s["metadata"]["name"]: {p["name"] for p in s["spec"]["ports"]}
        for s in find(docs, "Service")
    }
    ingresses = find(docs, "Ingress")
    assert len(ingresses) == 3
    for ingress in ingresses:
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert ingress["spec"]["tls"][0]["secretName"] == "sandbox-tls"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["port"]["name"] in services[backend["name"]]
    assert not find(render_docs(), "Ingress")


def test_servicemonitor_targets_the_metrics_port() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "servicemonitor-values.yaml"))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(docs, "Service", "-controller-metrics")
    assert (
        service["spec"]["selector"].items() <= monitor["spec"]["selector"]["matchLabels"].items()
        or monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert not find(render_docs(), "ServiceMonitor")


def test_pdbs_only_where_they_protect_something() -> None:
    # A budget of one pod over one replica would block node drains forever.
    assert not find(render_docs(), "PodDisruptionBudget")
    docs = render_docs(load_values(CHART_DIR / "ci" / "ha-values.yaml"))
    pdbs = {p["metadata"]["name"]: p for p in find(docs, "PodDisruptionBudget")}
    assert set(pdbs) == {
        "demo-mini-jupyter-sandbox-gateway",
        "demo-mini-jupyter-sandbox-fileserver",
    }
    for name, pdb in pdbs.items():
        deployment = one(docs, "Deployment", name.removeprefix("demo-mini-jupyter-sandbox"))
        assert (
            pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )
        assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_components_can_be_disabled() -> None:
    docs = render_docs(load_values(CHART_DIR / "ci" / "components-disabled-values.yaml"))
    assert [d["metadata"]["name"] for d in find(docs, "Deployment")] == [
        "demo-mini-jupyter-sandbox-gateway"
    ]
