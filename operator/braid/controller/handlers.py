"""kopf handlers. Each is a few lines: find which run an event is about, reconcile it."""

from __future__ import annotations

from typing import Any

import kopf
import structlog
from prometheus_client import start_http_server

from braid.api.common import GROUP, VERSION
from braid.api.podtemplate import PodPolicy
from braid.api.reasons import DOMAIN
from braid.controller.reconcile import FIRST_WRITE_AFTER, Reconciler
from braid.controller.runtime import Runtime
from braid.controller.schedules import ScheduleController
from braid.kube.client import KubeCluster
from braid.kube.listwatch import LIST_PAGE
from braid.kube.pods import LABEL_RUN
from braid.kube.podwatch import PodIndex, PodWatch
from braid.kube.runwatch import RunWatch
from braid.kube.selectors import parse_selector, selector_keys
from braid.metrics import Metrics
from braid.webhook import WebhookPolicy

log = structlog.get_logger("braid.controller")

RUNS = (GROUP, VERSION, "workflowruns")
SCHEDULES = (GROUP, VERSION, "workflowschedules")


_runtime: Runtime | None = None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Own every key kopf persists: nothing under kopf.zalando.org.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=DOMAIN, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{DOMAIN}/finalizer"
    settings.posting.level = 100  # kopf's own k8s events: never; Braid records its own
    settings.watching.server_timeout = 300
    # The first listing in pages, as the pod watch lists: a restart with thousands of runs
    # active then never holds all of them as one parsed reply.
    settings.watching.chunk_size = LIST_PAGE
    # kopf waits this long for more events on one object before handling them; the default
    # (0.1 s) is added to every step transition, and reconciles are level-based anyway.
    settings.batching.batch_window = 0.01
    settings.networking.request_timeout = 30
    # Least privilege: no cluster-wide watch of CRDs or namespaces (kopf would otherwise ask
    # for both); the resources are discovered once, at start, as checked below.
    settings.scanning.disabled = True
    if memo.get("selector"):
        # A shard: the API server sends only the runs it owns (kopf watches them in a hot
        # standby; the run watch below gets the same selector).
        settings.watching.label_selectors[GROUP, "workflowruns"] = memo["selector"]
    cluster = await KubeCluster.from_kubeconfig()
    memo["cluster"] = cluster
    served = await cluster.served_resources(GROUP, VERSION)
    missing = {"workflows", "workflowruns", "workflowschedules"} - served
    if missing:
        await cluster.close()
        raise kopf.PermanentError(
            f"{GROUP}/{VERSION} does not serve {', '.join(sorted(missing))}: install the CRDs "
            "(kubectl apply -f crds/, or the Helm chart) and start the operator again"
        )
    policy = memo.get("approval_policy")
    memo["approvals_verified"] = bool(policy) and await cluster.approval_policy_enforced(
        str(policy)
    )
    if memo["approvals_verified"]:
        log.info("Found the approval admission policy enforced", policy=policy)
    else:
        # Without it nobody checks who wrote an approval annotation: group gates count no
        # approvals, and waiting runs say their approvers are not verified.
        log.warning(
            "Did not find the approval admission policy enforced; approver identity is not "
            "verified and approvals through groups are not counted",
            policy=policy or "(none given: --approval-policy)",
        )
    memo["schedules"] = ScheduleController(cluster)
    metrics = Metrics()
    metrics.watch_requests(lambda: cluster.requests)
    memo["metrics"] = metrics
    port = memo.get("metrics_port")
    if port:
        address = memo.get("metrics_address") or "0.0.0.0"  # noqa: S104 - scraped from the cluster
        start_http_server(int(port), addr=address, registry=metrics.registry)
        log.info("Serving metrics", address=address, port=port)
    runtime = _runtime_for(memo)
    # The step pods: watched directly, not through kopf (kube/podwatch.py says why). A
    # shard's runs' pods carry the selector's labels (see Reconciler.shard_keys).
    selector = ",".join(filter(None, [LABEL_RUN, memo.get("selector")]))
    watch = PodWatch(
        cluster.api,
        memo.get("namespaces") or [],
        selector,
        runtime.pod_news,
        runtime.pods,
        cluster.requests,
    )
    watch.start()
    memo["pod_watch"] = watch
    if not memo.get("peering"):
        runs = RunWatch(
            cluster.api,
            memo.get("namespaces") or [],
            memo.get("selector") or "",
            runtime.run_changed,
            runtime.run_gone,
            runtime.known_runs,
            cluster.requests,
        )
        runs.start()
        memo["run_watch"] = runs


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for watch in ("run_watch", "pod_watch"):
        if memo.get(watch) is not None:
            await memo[watch].stop()
    if _runtime is not None:
        await _runtime.close()
    if memo.get("schedules") is not None:
        await memo["schedules"].close()
    cluster = memo.get("cluster")
    if cluster is not None:
        log.info("Stopped operator", requests=dict(cluster.requests))
        await cluster.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _runtime_for(memo: Any) -> Runtime:
    global _runtime  # noqa: PLW0603 - one runtime per operator process
    if _runtime is None:
        pods = PodIndex()
        settings: dict[str, Any] = {
            k: memo[k] for k in ("webhook_policy", "pod_policy") if memo.get(k) is not None
        }
        reconciler = Reconciler(
            memo["cluster"],
            metrics=memo.get("metrics"),
            webhook_policy=settings.get("webhook_policy", WebhookPolicy()),
            pods=settings.get("pod_policy", PodPolicy()),
            approvals_verified=bool(memo.get("approvals_verified")),
            artifacts=memo.get("artifacts"),
            step_cache=bool(memo.get("step_cache")),
            shard=parse_selector(memo.get("selector") or ""),
            shard_keys=selector_keys(memo.get("selector") or ""),
            pool_pods=pods.pool_pods,
            first_write_after=FIRST_WRITE_AFTER,
        )
        if reconciler.metrics is not None:
            reconciler.metrics.watch_shared(reconciler.pools.in_use, reconciler.breakers)
        _runtime = Runtime(reconciler, pods)
    return _runtime


def watch_runs_with_kopf() -> None:
    """A hot standby (``--peering``): kopf watches the runs, so that its peering pauses the
    standby's runs with everything else. Standalone, the operator's own watch follows them
    (kube/runwatch.py)."""
    kopf.on.event(*RUNS)(run_changed)


async def run_changed(
    *, type: str, namespace: str | None, name: str, memo: Any, body: kopf.Body, **_: Any
) -> None:
    runtime = _runtime_for(memo)
    if namespace is None:
        return
    # Kept as compact JSON; the reconcile is queued, not awaited, so kopf lets go of the event
    # at once (a burst of new runs would otherwise hold every parsed body until its turn).
    if type == "DELETED":
        runtime.run_gone((namespace, name), dict(body))
    else:
        runtime.run_changed(dict(body))


@kopf.on.event(*SCHEDULES)
async def schedule_changed(
    *, type: str, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    controller: ScheduleController | None = memo.get("schedules")
    if controller is None or namespace is None:
        return
    if type == "DELETED":
        controller.deleted((namespace, name))
    else:
        controller.changed((namespace, name))
