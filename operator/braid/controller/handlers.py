"""kopf handlers, for a hot standby (``--peering``): of the operators sharing a peering name
only the one with the highest priority works, and kopf's peering pauses the others' watches
of the runs and schedules, so those are kopf's here. The rest is the same service as
standalone (controller/service.py). Each handler is a few lines."""

from __future__ import annotations

from typing import Any

import kopf

from braid.api.common import GROUP, VERSION
from braid.api.reasons import DOMAIN
from braid.controller.service import Service, StartError
from braid.kube.listwatch import LIST_PAGE

RUNS = (GROUP, VERSION, "workflowruns")
SCHEDULES = (GROUP, VERSION, "workflowschedules")


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
    # The first listing in pages, as the operator's own watches list: a restart with
    # thousands of runs active then never holds all of them as one parsed reply.
    settings.watching.chunk_size = LIST_PAGE
    # kopf waits this long for more events on one object before handling them; the default
    # (0.1 s) is added to every step transition, and reconciles are level-based anyway.
    settings.batching.batch_window = 0.01
    settings.networking.request_timeout = 30
    # Least privilege: no cluster-wide watch of CRDs or namespaces (kopf would otherwise ask
    # for both); the resources are discovered once, at start, by the service.
    settings.scanning.disabled = True
    service: Service = memo["service"]
    if service.settings.selector:
        # A shard: the API server sends only the runs it owns.
        settings.watching.label_selectors[GROUP, "workflowruns"] = service.settings.selector
    try:
        await service.start(own_watches=False)
    except StartError as exc:
        raise kopf.PermanentError(str(exc)) from None


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["service"].stop()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.event(*RUNS)
async def run_changed(
    *, type: str, namespace: str | None, name: str, memo: Any, body: kopf.Body, **_: Any
) -> None:
    runtime = memo["service"].runtime
    if namespace is None or runtime is None:
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
    controller = memo["service"].schedules
    if controller is None or namespace is None:
        return
    if type == "DELETED":
        controller.deleted((namespace, name))
    else:
        controller.changed((namespace, name))
