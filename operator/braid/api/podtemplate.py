"""The podTemplate contract: which Pod fields a workflow may set, and the Pod Security Standard
the result must meet.

A ``container.podTemplate`` is merged into the step's Pod, which the operator creates with its
own rights. Whoever may create a WorkflowRun may therefore choose what kind of Pod runs, so the
template is an allow-list, checked against the Kubernetes Pod Security Standards
(https://kubernetes.io/docs/concepts/security/pod-security-standards/) at the level the
operator admin chose (``--pod-security``, default ``restricted``), and service accounts come
only from the admin's list (``--pod-service-account NAMESPACE/NAME``). Braid's own metadata
(name, namespace, owner, Braid labels) always wins, at every level.

Purely declarative: the same checks serve ``braid lint``, the operator's admission of a run,
and the Pod builder (``braid.kube.pods``), which copies nothing these checks did not pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from braid.api.errors import FieldError


class PodSecurityLevel(StrEnum):
    """The Pod Security Standard step Pods must meet (the names of Pod Security Admission)."""

    RESTRICTED = "restricted"
    BASELINE = "baseline"
    PRIVILEGED = "privileged"


BRAID_LABEL_PREFIX = "braid.dev/"

# Fields a template may set at the restricted and baseline levels. Everything else is refused
# with its path; at the privileged level every field but Braid's own is accepted.
METADATA_FIELDS = frozenset({"labels", "annotations"})
SPEC_FIELDS = frozenset(
    {
        "affinity",
        "automountServiceAccountToken",
        "containers",
        "dnsConfig",
        "dnsPolicy",
        "enableServiceLinks",
        "hostAliases",
        "imagePullSecrets",
        "nodeSelector",
        "preemptionPolicy",
        "priorityClassName",
        "runtimeClassName",
        "schedulerName",
        "securityContext",
        "serviceAccountName",
        "terminationGracePeriodSeconds",
        "tolerations",
        "topologySpreadConstraints",
        "volumes",
    }
)
CONTAINER_FIELDS = frozenset(
    {
        "env",
        "envFrom",
        "imagePullPolicy",
        "ports",
        "resizePolicy",
        "resources",
        "securityContext",
        "volumeDevices",
        "volumeMounts",
        "workingDir",
    }
)
# Braid's, at every level: what the Pod is, who owns it, how its result is read.
OWNED_METADATA = frozenset(
    {"name", "generateName", "namespace", "ownerReferences", "finalizers", "uid"}
)
OWNED_SPEC = frozenset(
    {"restartPolicy", "activeDeadlineSeconds", "ephemeralContainers", "serviceAccount"}
)
# Fields outside the allow-list that are what the Pod Security Standards exist to keep out.
BEYOND_STANDARD = {
    "hostNetwork": "the host's network namespace (hostNetwork)",
    "hostPID": "the host's process namespace (hostPID)",
    "hostIPC": "the host's IPC namespace (hostIPC)",
    "initContainers": "init containers (each could run as anything)",
    "nodeName": "choosing a node by name (it bypasses the scheduler)",
    "shareProcessNamespace": "a shared process namespace",
}
OWNED_CONTAINER = frozenset(
    {"name", "image", "command", "args", "terminationMessagePath", "terminationMessagePolicy"}
)

RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class PodPolicy:
    """What the operator admin lets workflow authors put in a podTemplate."""

    level: PodSecurityLevel = PodSecurityLevel.RESTRICTED
    # namespace ("*": any) -> service account names step Pods may run as
    service_accounts: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, level: str, service_accounts: Iterable[str] = ()) -> PodPolicy:
        """From the operator's (or lint's) options; raises ValueError naming a bad entry."""
        try:
            chosen = PodSecurityLevel(level)
        except ValueError:
            valid = ", ".join(v.value for v in PodSecurityLevel)
            raise ValueError(f"--pod-security {level!r}: must be one of {valid}") from None
        accounts: dict[str, set[str]] = {}
        for entry in service_accounts:
            namespace, sep, name = entry.partition("/")
            if not sep or not namespace or not name or "/" in name:
                raise ValueError(
                    f"--pod-service-account {entry!r}: expected NAMESPACE/NAME (or */NAME for "
                    "every namespace)"
                )
            accounts.setdefault(namespace, set()).add(name)
        return cls(chosen, {k: frozenset(v) for k, v in accounts.items()})

    def allows_service_account(self, name: str, namespace: str | None) -> bool:
        """``namespace`` None (lint, where the namespace is not known): allowed somewhere."""
        if name in self.service_accounts.get("*", frozenset()):
            return True
        if namespace is None:
            return any(name in names for names in self.service_accounts.values())
        return name in self.service_accounts.get(namespace, frozenset())

    def describe_service_accounts(self) -> str:
        entries = sorted(f"{ns}/{n}" for ns, names in self.service_accounts.items() for n in names)
        return ", ".join(entries) or "none"


def check_pod_template(
    template: Any, path: str, policy: PodPolicy, namespace: str | None = None
) -> list[FieldError]:
    """Every problem with a podTemplate under ``policy``; paths start at ``path``."""
    return _Checker(policy, namespace).template(template, path)


class _Checker:
    def __init__(self, policy: PodPolicy, namespace: str | None) -> None:
        self.policy = policy
        self.namespace = namespace
        self.errors: list[FieldError] = []
        self.privileged = policy.level == PodSecurityLevel.PRIVILEGED
        self.restricted = policy.level == PodSecurityLevel.RESTRICTED

    def refuse(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def beyond(self, path: str, what: str, needs: str = "privileged") -> None:
        """A value the chosen Pod Security Standard does not admit."""
        self.refuse(
            path,
            f"not allowed at the {self.policy.level.value} Pod Security level ({what}); the "
            f"operator admits it only when started with --pod-security={needs} (chart value "
            "pods.security)",
        )

    def mapping(self, value: Any, path: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.refuse(path, "must be a mapping")
            return None
        return value

    def fields(
        self,
        obj: dict[str, Any],
        path: str,
        allowed: frozenset[str],
        owned: frozenset[str],
        *,
        at_every_level: bool = False,
    ) -> None:
        open_ = self.privileged and not at_every_level
        for key in obj:
            if key in owned:
                self.refuse(f"{path}.{key}", "is set by Braid and cannot be overridden")
            elif key in BEYOND_STANDARD and not open_:
                self.beyond(f"{path}.{key}", BEYOND_STANDARD[key])
            elif key not in allowed and not open_:
                valid = ", ".join(sorted(allowed))
                hint = "" if at_every_level else " (--pod-security=privileged admits every field)"
                self.refuse(
                    f"{path}.{key}",
                    f"not allowed in a podTemplate; allowed: {valid}{hint}",
                )

    def template(self, template: Any, path: str) -> list[FieldError]:
        top = self.mapping(template, path)
        if top is None:
            return self.errors
        for key in top:
            if key not in ("metadata", "spec"):
                self.refuse(f"{path}.{key}", "a podTemplate has only metadata and spec")
        meta = self.mapping(top.get("metadata"), f"{path}.metadata")
        if meta is not None:
            self.metadata(meta, f"{path}.metadata")
        spec = self.mapping(top.get("spec"), f"{path}.spec")
        if spec is not None:
            self.spec(spec, f"{path}.spec")
        return self.errors

    def metadata(self, meta: dict[str, Any], path: str) -> None:
        self.fields(meta, path, METADATA_FIELDS, OWNED_METADATA, at_every_level=True)
        for kind in ("labels", "annotations"):
            values = self.mapping(meta.get(kind), f"{path}.{kind}")
            for key, value in (values or {}).items():
                where = f"{path}.{kind}[{key}]"
                if not isinstance(value, str):
                    self.refuse(where, "must be a string")
                elif kind == "labels" and key.startswith(BRAID_LABEL_PREFIX):
                    self.refuse(where, "braid.dev/ labels are Braid's: they say which run owns it")
                elif (
                    kind == "annotations"
                    and key.startswith(APPARMOR_ANNOTATION)
                    and value != "runtime/default"
                    and not value.startswith("localhost/")
                ):
                    self.beyond(where, f"AppArmor profile {value!r}")

    def spec(self, spec: dict[str, Any], path: str) -> None:
        self.fields(spec, path, SPEC_FIELDS, OWNED_SPEC)
        self.service_account(spec, path)
        sc = self.mapping(spec.get("securityContext"), f"{path}.securityContext")
        if sc is not None:
            self.security_context(sc, f"{path}.securityContext", pod=True)
        self.volumes(spec, path)
        containers = spec.get("containers")
        if containers is not None:
            if not isinstance(containers, list) or len(containers) > 1:
                self.refuse(
                    f"{path}.containers",
                    "must be a list of one entry: overrides for the step's container",
                )
            elif containers:
                c = self.mapping(containers[0], f"{path}.containers[0]")
                if c is not None:
                    self.container(c, f"{path}.containers[0]")

    def service_account(self, spec: dict[str, Any], path: str) -> None:
        name = spec.get("serviceAccountName")
        allows = self.policy.allows_service_account
        if name is not None and (not isinstance(name, str) or not allows(name, self.namespace)):
            where = f" in namespace {self.namespace}" if self.namespace else ""
            self.refuse(
                f"{path}.serviceAccountName",
                f"service account {name!r} is not one the operator lets step Pods run as{where} "
                f"(allowed: {self.policy.describe_service_accounts()}; the admin adds "
                "--pod-service-account NAMESPACE/NAME, chart value pods.serviceAccounts)",
            )
        if spec.get("automountServiceAccountToken") is True and name is None:
            self.refuse(
                f"{path}.automountServiceAccountToken",
                "a token is mounted only for a serviceAccountName the operator allows; "
                "without one the namespace's default account's token would be exposed",
            )

    def security_context(self, sc: dict[str, Any], path: str, *, pod: bool) -> None:
        if self.privileged:
            return
        self.host_and_privilege(sc, path, pod=pod)
        self.confinement(sc, path)
        if not self.restricted:
            self.capabilities(sc, path, BASELINE_CAPABILITIES, pod=pod)
            return
        if sc.get("runAsNonRoot") is False:
            self.beyond(f"{path}.runAsNonRoot", "runAsNonRoot: false", "baseline")
        if sc.get("runAsUser") == 0:
            self.beyond(f"{path}.runAsUser", "running as root, runAsUser: 0", "baseline")
        if not pod and sc.get("allowPrivilegeEscalation") is True:
            self.beyond(
                f"{path}.allowPrivilegeEscalation", "allowPrivilegeEscalation: true", "baseline"
            )
        self.capabilities(sc, path, RESTRICTED_CAPABILITIES, pod=pod)

    def host_and_privilege(self, sc: dict[str, Any], path: str, *, pod: bool) -> None:
        """Baseline: no Windows host process, privileged container, unmasked /proc, or
        unsafe sysctl."""
        windows = self.mapping(sc.get("windowsOptions"), f"{path}.windowsOptions") or {}
        if windows.get("hostProcess"):
            self.beyond(f"{path}.windowsOptions.hostProcess", "a Windows host process")
        if not pod and sc.get("privileged"):
            self.beyond(f"{path}.privileged", "a privileged container")
        if not pod and sc.get("procMount") not in (None, "Default"):
            self.beyond(f"{path}.procMount", f"procMount {sc.get('procMount')!r}")
        for i, sysctl in enumerate(sc.get("sysctls") or [] if pod else []):
            name = sysctl.get("name") if isinstance(sysctl, dict) else None
            if name not in SAFE_SYSCTLS:
                self.beyond(f"{path}.sysctls[{i}]", f"sysctl {name!r}")

    def confinement(self, sc: dict[str, Any], path: str) -> None:
        """Seccomp, AppArmor and SELinux stay confined (restricted: seccomp must be set)."""
        seccomp = self.mapping(sc.get("seccompProfile"), f"{path}.seccompProfile") or {}
        kind = seccomp.get("type")
        if kind == "Unconfined":
            self.beyond(f"{path}.seccompProfile.type", "seccomp profile 'Unconfined'")
        elif self.restricted and kind not in (None, "RuntimeDefault", "Localhost"):
            self.beyond(f"{path}.seccompProfile.type", f"seccomp profile {kind!r}", "baseline")
        apparmor = self.mapping(sc.get("appArmorProfile"), f"{path}.appArmorProfile") or {}
        profile = apparmor.get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            self.beyond(f"{path}.appArmorProfile.type", f"AppArmor profile {profile!r}")
        selinux = self.mapping(sc.get("seLinuxOptions"), f"{path}.seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES:
            self.beyond(f"{path}.seLinuxOptions.type", f"SELinux type {selinux.get('type')!r}")
        for key in ("user", "role"):
            if selinux.get(key):
                self.beyond(f"{path}.seLinuxOptions.{key}", f"a custom SELinux {key}")

    def capabilities(
        self, sc: dict[str, Any], path: str, allowed: frozenset[str], *, pod: bool
    ) -> None:
        if pod:
            return
        caps = self.mapping(sc.get("capabilities"), f"{path}.capabilities") or {}
        for i, cap in enumerate(caps.get("add") or []):
            if cap not in allowed:
                needs = "baseline" if cap in BASELINE_CAPABILITIES else "privileged"
                self.beyond(f"{path}.capabilities.add[{i}]", f"capability {cap!r}", needs)
        drop = caps.get("drop")
        if self.restricted and drop is not None and "ALL" not in drop:
            # The template's list replaces Braid's drop: [ALL].
            self.beyond(
                f"{path}.capabilities.drop", "keeping capabilities: drop must list ALL", "baseline"
            )

    def volumes(self, spec: dict[str, Any], path: str) -> None:
        volumes = spec.get("volumes")
        if volumes is None:
            return
        if not isinstance(volumes, list):
            self.refuse(f"{path}.volumes", "must be a list")
            return
        for i, volume in enumerate(volumes):
            where = f"{path}.volumes[{i}]"
            if not isinstance(volume, dict):
                self.refuse(where, "must be a mapping")
                continue
            if str(volume.get("name", "")).startswith("braid-"):
                self.refuse(f"{where}.name", "volumes named braid-* are Braid's (artifacts)")
            for source in (k for k in volume if k != "name" and not self.privileged):
                if source == "hostPath":
                    self.beyond(f"{where}.hostPath", "a hostPath volume")
                elif self.restricted and source not in RESTRICTED_VOLUMES:
                    self.beyond(f"{where}.{source}", f"a {source} volume", "baseline")
            if spec.get("serviceAccountName") is None:
                self.no_token(volume.get("projected"), where)

    def no_token(self, projected: Any, where: str) -> None:
        """Without an allowed service account, no token reaches the Pod, projected either."""
        if not isinstance(projected, dict):
            return
        for j, src in enumerate(projected.get("sources") or []):
            if isinstance(src, dict) and "serviceAccountToken" in src:
                self.refuse(
                    f"{where}.projected.sources[{j}].serviceAccountToken",
                    "a service account token is mounted only for a serviceAccountName "
                    "the operator allows",
                )

    def container(self, c: dict[str, Any], path: str) -> None:
        self.fields(c, path, CONTAINER_FIELDS, OWNED_CONTAINER)
        sc = self.mapping(c.get("securityContext"), f"{path}.securityContext")
        if sc is not None:
            self.security_context(sc, f"{path}.securityContext", pod=False)
        for i, port in enumerate(c.get("ports") or []):
            if isinstance(port, dict) and port.get("hostPort") and not self.privileged:
                self.beyond(f"{path}.ports[{i}].hostPort", "a host port")
        for key in ("env", "envFrom", "volumeMounts"):
            if c.get(key) is not None and not isinstance(c.get(key), list):
                self.refuse(f"{path}.{key}", "must be a list")
        for i, env in enumerate(c.get("env") or []):
            name = env.get("name") if isinstance(env, dict) else None
            if isinstance(name, str) and name.startswith("BRAID_"):
                self.refuse(f"{path}.env[{i}].name", "BRAID_ variables are set by Braid")
        for i, mount in enumerate(c.get("volumeMounts") or []):
            name = mount.get("name") if isinstance(mount, dict) else None
            if isinstance(name, str) and name.startswith("braid-"):
                self.refuse(f"{path}.volumeMounts[{i}].name", "braid-* volumes are Braid's")
