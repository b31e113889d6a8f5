"""The operator's parts, started and stopped in one place: the connection to the API server,
the reconciler and its runtime, the metrics, and the watches that feed them (the step pods,
the runs, the schedules). Two shells run it: standalone (controller/standalone.py: no kopf
loaded at all) and a hot standby (controller/handlers.py: kopf's peering decides which
replica works, so kopf's watches of the runs and schedules pause with it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from prometheus_client import start_http_server

from braid.api.common import GROUP, VERSION
from braid.api.podtemplate import PodPolicy
from braid.controller.reconcile import FIRST_WRITE_AFTER, Reconciler
from braid.controller.runtime import Runtime
from braid.controller.schedules import ScheduleController
from braid.kube.artifact_pods import ArtifactSettings
from braid.kube.client import KubeCluster
from braid.kube.pods import LABEL_RUN
from braid.kube.podwatch import PodIndex, PodWatch
from braid.kube.runwatch import RunWatch
from braid.kube.schedulewatch import ScheduleWatch
from braid.kube.selectors import parse_selector, selector_keys
from braid.metrics import Metrics
from braid.webhook import WebhookPolicy

log = structlog.get_logger("braid.controller")

KINDS = {"workflows", "workflowruns", "workflowschedules"}


class StartError(Exception):
    """The cluster cannot host this operator as it is (its CRDs are missing)."""


@dataclass(frozen=True)
class Settings:
    """What `braid operator`'s flags decide."""

    namespaces: list[str] = field(default_factory=list)  # none: the whole cluster
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes it from the cluster
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    selector: str = ""  # a shard's label selector
    pod_policy: PodPolicy = field(default_factory=PodPolicy)
    approval_policy: str = ""
    artifacts: ArtifactSettings | None = None
    step_cache: bool = False


@dataclass
class Service:
    settings: Settings
    cluster: KubeCluster | None = None
    runtime: Runtime | None = None
    schedules: ScheduleController | None = None
    watches: list[PodWatch | RunWatch | ScheduleWatch] = field(default_factory=list)

    async def start(self, *, own_watches: bool) -> None:
        """Connect, check the CRDs and the approval policy, start the pod watch; with
        ``own_watches`` also the run and schedule watches (a hot standby leaves those to
        kopf, whose peering pauses them). StartError when the CRDs are not served."""
        s = self.settings
        cluster = self.cluster = await KubeCluster.from_kubeconfig()
        served = await cluster.served_resources(GROUP, VERSION)
        if missing := KINDS - served:
            raise StartError(
                f"{GROUP}/{VERSION} does not serve {', '.join(sorted(missing))}: install the "
                "CRDs (kubectl apply -f crds/, or the Helm chart) and start the operator again"
            )
        verified = bool(s.approval_policy) and await cluster.approval_policy_enforced(
            s.approval_policy
        )
        if verified:
            log.info("Found the approval admission policy enforced", policy=s.approval_policy)
        else:
            # Without it nobody checks who wrote an approval annotation: group gates count no
            # approvals, and waiting runs say their approvers are not verified.
            log.warning(
                "Did not find the approval admission policy enforced; approver identity is not "
                "verified and approvals through groups are not counted",
                policy=s.approval_policy or "(none given: --approval-policy)",
            )
        schedules = self.schedules = ScheduleController(cluster)
        metrics = Metrics()
        metrics.watch_requests(lambda: cluster.requests)
        if s.metrics_port:
            start_http_server(s.metrics_port, addr=s.metrics_address, registry=metrics.registry)
            log.info("Serving metrics", address=s.metrics_address, port=s.metrics_port)
        pods = PodIndex()
        reconciler = Reconciler(
            cluster,
            metrics=metrics,
            webhook_policy=s.webhook_policy,
            pods=s.pod_policy,
            approvals_verified=verified,
            artifacts=s.artifacts,
            step_cache=s.step_cache,
            shard=parse_selector(s.selector),
            shard_keys=selector_keys(s.selector),
            pool_pods=pods.pool_pods,
            first_write_after=FIRST_WRITE_AFTER,
        )
        metrics.watch_shared(reconciler.pools.in_use, reconciler.breakers)
        runtime = self.runtime = Runtime(reconciler, pods)
        # The step pods: watched directly (kube/podwatch.py says why). A shard's runs' pods
        # carry the selector's labels (see Reconciler.shard_keys).
        selector = ",".join(filter(None, [LABEL_RUN, s.selector]))
        self.watches = [
            PodWatch(cluster.api, s.namespaces, selector, runtime.pod_news, pods, cluster.requests)
        ]
        if own_watches:
            self.watches += [
                RunWatch(
                    cluster.api,
                    s.namespaces,
                    s.selector,
                    runtime.run_changed,
                    runtime.run_gone,
                    runtime.known_runs,
                    cluster.requests,
                ),
                ScheduleWatch(
                    cluster.api,
                    s.namespaces,
                    schedules.changed,
                    schedules.deleted,
                    schedules.known,
                    cluster.requests,
                ),
            ]
        for watch in self.watches:
            watch.start()

    async def stop(self) -> None:
        """Stop the watches, then what they fed; safe after a start that failed half-way."""
        for watch in self.watches:
            await watch.stop()
        if self.runtime is not None:
            await self.runtime.close()
        if self.schedules is not None:
            await self.schedules.close()
        if self.cluster is not None:
            log.info("Stopped operator", requests=dict(self.cluster.requests))
            await self.cluster.close()
