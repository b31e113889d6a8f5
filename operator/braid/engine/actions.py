"""What the engine is told (observations) and what it asks for (actions).

The operator turns actions into API calls (a Pod per container attempt, Events); the local
runner turns them into processes and terminal lines. Neither decides anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from braid.api.reasons import DecisionKind
from braid.api.run import ApprovalRecord, Artifact, HistoryEntry, ParentLink
from braid.api.workflow import BudgetSpec, EnvFromSource, EnvVar, SecretValue, WorkflowSpec
from braid.engine.breakers import BreakerBoard


@dataclass(frozen=True)
class AttemptLabels:
    """Where an attempt sits in the run; becomes Pod labels in a cluster."""

    step: str
    attempt: int
    item: int | None = None
    iteration: int | None = None
    body_step: str | None = None
    role: Literal["step", "compensation", "finally"] = "step"


@dataclass(frozen=True)
class ContainerRequest:
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    working_dir: str | None
    resources: dict[str, Any] | None
    pod_template: dict[str, Any] | None
    # Variables whose values come from Secrets, ConfigMaps or the Pod, and whole Secrets and
    # ConfigMaps as variables: the driver resolves them (a cluster's kubelet, or locally).
    env_refs: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    # Files fetched under $BRAID_INPUTS before the command starts, and how much the attempt
    # may write under $BRAID_ARTIFACTS (None: nothing; in a cluster, no artifact sidecar).
    inputs: tuple[InputArtifact, ...] = ()
    artifacts: ArtifactRoom | None = None
    job: bool = False  # runAs: Job: the attempt is a Job (whose one Pod runs it)


@dataclass(frozen=True)
class InputArtifact:
    path: str  # relative to $BRAID_INPUTS
    uri: str
    sha256: str | None = None  # checked after the download when known


@dataclass(frozen=True)
class ArtifactRoom:
    """What one attempt may write: the step's limits, or what the run has left if less."""

    max_bytes: int
    max_files: int


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP call. The url, header values and body leaves that are SecretValues are read
    from Secrets by the driver when it makes the call (spec literals only: nothing a run
    computes can name a Secret)."""

    method: str
    url: str | SecretValue
    headers: dict[str, str | SecretValue]
    body: Any
    timeout_seconds: float | None = None  # of the HTTP call (webhook.timeoutSeconds)
    # An llm step: the driver retries 429 and 5xx within the attempt (honouring Retry-After)
    # and keeps the request and the reply as the attempt's artifacts where it can.
    model_call: bool = False

    @property
    def shown_url(self) -> str:
        """The URL as messages may show it."""
        if isinstance(self.url, SecretValue):
            return f"the URL in Secret {self.url.value_from.secret_key_ref.name}"
        return self.url[:300]


@dataclass(frozen=True)
class ChildRunRequest:
    """A sub-workflow's attempt: a child run named as the attempt, of the named workflow (the
    driver finds it) or of an inline spec, with rendered params. ``budget``: what the parent
    has left, the child's cap; ``parent``: the parent's step (or item) it is."""

    run_name: str  # the attempt's name, cut to fit a label (children.run_name)
    workflow: str | None
    spec: WorkflowSpec | None
    params: dict[str, Any]
    parent: ParentLink
    budget: BudgetSpec | None = None


@dataclass(frozen=True)
class StartAttempt:
    """Start one attempt. ``name`` is deterministic: starting it twice must be a no-op/409."""

    name: str
    labels: AttemptLabels
    timeout_seconds: int | None
    container: ContainerRequest | None = None
    webhook: WebhookRequest | None = None
    child: ChildRunRequest | None = None
    concurrency_key: str | None = None  # holds a slot of this shared pool while it runs
    candidate: str | None = None  # a routed call: the candidate it goes to


@dataclass(frozen=True)
class CacheEntry:
    """A success kept for reuse: its outputs and artifacts, and where they came from."""

    key: str  # the digest entries are stored by
    outputs: dict[str, Any]
    artifacts: dict[str, Artifact] | None
    run: str
    step: str  # as Task.display
    time: datetime


@dataclass(frozen=True)
class StoreCache:
    """Keep a success under its cache key (the driver's store; bounded)."""

    entry: CacheEntry


@dataclass(frozen=True)
class CancelAttempt:
    name: str
    reason: str
    job: bool = False  # the attempt is a Job: delete it (and its Pod with it)
    child: bool = False  # the attempt is a child run: cancel it (its compensation runs)


@dataclass(frozen=True)
class RecordEvent:
    """A Kubernetes-style Event on the run: type, CamelCase reason, message."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    step: str | None = None
    gate: str | None = None  # ApprovalRequested: the name decisions must use
    iteration: int | None = None  # ApprovalRequested inside a loop: which iteration
    deadline: datetime | None = None  # ApprovalRequested: when the gate times out, if it does
    # Routine progress (a step succeeded, a fan-out started): shown locally and logged by the
    # operator, but not posted as a Kubernetes Event, to keep API writes per step low.
    progress: bool = False

    def history(self, now: datetime) -> HistoryEntry:
        """The entry it leaves in the run's status history."""
        return HistoryEntry(
            time=now, type=self.type, reason=self.reason, message=self.message[:512], step=self.step
        )


@dataclass(frozen=True)
class RecordDecision:
    """A decision on an approval gate, as recorded in the run's status. Drivers keep it where
    it outlives the run (the operator writes one structured log line per decision)."""

    gate: str  # the name decisions use: the step, the loop body step, or "budget"
    user: str
    decision: DecisionKind
    digest: str | None
    reason: str | None = None
    iteration: int | None = None
    verified: bool | None = None  # identity checked by the API server's admission policy

    @classmethod
    def of(cls, gate: str, iteration: int | None, record: ApprovalRecord) -> RecordDecision:
        return cls(
            gate,
            record.user,
            record.decision,
            record.digest,
            record.reason,
            iteration,
            record.verified,
        )


@dataclass(frozen=True)
class LoadItems:
    """Fetch an artifact holding a fan-out's JSON list of items and give it back, parsed, in
    Observations.item_lists (by uri). The step waits meanwhile; the list is never stored in
    the run."""

    step: str
    uri: str
    sha256: str | None = None


Action = StartAttempt | CancelAttempt | RecordEvent | RecordDecision | LoadItems | StoreCache


@dataclass(frozen=True)
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON when the response was JSON, else text


@dataclass(frozen=True)
class AttemptResult:
    """An attempt that ended, as observed (pod terminated, process exited, HTTP call done).

    Reporting the same result again is harmless: the engine only acts on attempts it is
    waiting for.
    """

    name: str
    exit_code: int | None = None
    output: str | None = None  # raw text of $BRAID_OUTPUT / the termination message
    response: HTTPResponse | None = None
    error: str | None = None  # could not run at all (image pull, connection refused, ...)
    message: str | None = None  # e.g. the tail of stderr
    timed_out: bool = False
    lost: bool = False  # the pod went away (deleted, evicted) before the step finished
    conflict: bool = False  # a pod of that name exists but belongs to something else
    # The files the attempt wrote under $BRAID_ARTIFACTS, as stored; or why they were not
    # (too large: the limits; else the inputs or the store failed).
    artifacts: dict[str, Artifact] | None = None
    artifact_error: str | None = None
    artifact_too_large: bool = False
    # A model call's request body and reply (masked), for the driver to keep as artifacts.
    exchange: tuple[Any, Any] | None = None
    child: ChildOutcome | None = None  # a child run that finished


@dataclass(frozen=True)
class ChildOutcome:
    """How a child run (a sub-workflow's attempt) ended, from its status."""

    phase: str  # Succeeded, Failed or Cancelled
    outputs: dict[str, Any] | None = None
    reason: str | None = None
    message: str | None = None
    usage: dict[str, Any] | None = None  # {tokens, cost}
    artifacts: dict[str, Artifact] | None = None  # its steps' files, as <step>/<name>
    steps: str | None = None  # its progress, e.g. "4/4"


@dataclass(frozen=True)
class ApprovalDecision:
    """A person's decision on an approval gate (from an annotation, the CLI or a prompt)."""

    step: str
    user: str
    approve: bool
    groups: tuple[str, ...] = ()
    reason: str | None = None
    iteration: int | None = None  # for gates inside loops; None matches any iteration
    trusted: bool = False  # the local runner's own user: counts as the whole quorum
    # The inputs digest the person approved (from "<user>:<digest>"); None binds the decision
    # to the digest in effect when it is first recorded.
    digest: str | None = None
    # Identity and group membership were checked by the API server's admission policy (group
    # membership is known only there); the engine still checks listed users itself. Without it
    # a gate that lists groups counts no one through a group.
    admitted: bool = False


@dataclass
class Observations:
    results: list[AttemptResult] = field(default_factory=list)
    decisions: list[ApprovalDecision] = field(default_factory=list)
    cancel: bool = False
    # Shared with other runs: attempts of other runs holding each concurrency key, and the
    # driver's circuit breakers (the engine updates them as results come in).
    elsewhere: dict[str, int] = field(default_factory=dict)
    breakers: BreakerBoard | None = None
    # Whether the API server's approval admission policy is known to be enforced (None: no
    # annotations are involved, as in a local run). False is said on waiting gates.
    approvals_verified: bool | None = None
    # The driver found the status too large to store: why, and how much to shed (1: outputs of
    # items and iterations, older iterations; 2: every output). The run fails StatusTooLarge.
    oversized: tuple[str, int] | None = None
    # Item lists fetched for fan-outs with itemsFrom (LoadItems), by uri: the list, or why it
    # could not be had. The driver keeps them as long as runs may need them.
    item_lists: Mapping[str, list[Any] | str] = field(default_factory=dict)
    # spec.concurrency: the run may not start yet — its place in the queue (position from 1,
    # runs waiting, the key and limit). None: it may start (or has no queue).
    queued: tuple[int, int, str, int] | None = None
    # The driver's cache of successes (cache: on steps), by key digest; None: no cache.
    cache: Mapping[str, CacheEntry] | None = None


@dataclass
class Decision:
    actions: list[Action]
    wake_at: datetime | None
    changed: bool
    finished: bool
    held: dict[str, int] = field(default_factory=dict)  # key -> this run's active attempts
    waiting_for: frozenset[str] = frozenset()  # keys this run waits for a slot of
