"""The Workflow kind: what to run, in which order, under which rules."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from braid.api.common import NAME_MAX, NAME_PATTERN, Model, ObjectMeta
from braid.api.reasons import FailureReason

# Invariants the API server checks at apply time (x-kubernetes-validations), next to the
# pydantic validators that check the same thing locally.


def _cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    return ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]
        }
    )


def _exactly_one(*fields: str) -> tuple[str, str]:
    # Arithmetic rather than a list filter: the API server's cost estimate multiplies a rule's
    # cost by every enclosing list's maxItems, and loop body steps are nested two lists deep.
    checks = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    return f"{checks} == 1", f"set exactly one of {', '.join(fields)}"


_MAP_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}

KEY_PATTERN = r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
MAX_EXPRESSION = 10_000
MAX_TEXT = 4_096

Expression = Annotated[str, StringConstraints(max_length=MAX_EXPRESSION)]
"""A CEL expression (https://cel.dev); see the README for the names in scope."""

JSON = Any


class ParamSpec(Model):
    """A declared input of the workflow."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=63,
        description="Name of the param, available to expressions as params.<name>.",
    )
    description: str | None = Field(
        default=None, max_length=MAX_TEXT, description="What the param is for."
    )
    default: JSON = Field(
        default=None,
        description="Value used when a run does not set the param. Without a default the param "
        "is required.",
    )
    schema_: dict[str, JSON] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema (draft 2020-12) every value of this param must satisfy, "
        "e.g. {type: integer, minimum: 1}.",
    )


OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"


class KeySelector(Model):
    """One key of a Secret or ConfigMap in the run's namespace."""

    name: str = Field(
        pattern=OBJECT_NAME, max_length=253, description="Name of the Secret or ConfigMap."
    )
    key: str = Field(pattern=DATA_KEY, max_length=253, description="The key to read.")
    optional: bool | None = Field(
        default=None, description="true: a missing object or key is not an error."
    )


class FieldSelector(Model):
    """A field of the step's own Pod (Kubernetes' downward API)."""

    field_path: str = Field(
        pattern=r"^(metadata\.(name|namespace|uid|labels\['[^']+'\]|annotations\['[^']+'\])"
        r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|podIP|podIPs))$",
        description="metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], "
        "metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.hostIP, "
        "status.podIP or status.podIPs.",
    )


class EnvVarSource(Model):
    """Where an environment variable's value comes from. Set exactly one."""

    model_config = _cel_rules(_exactly_one("secretKeyRef", "configMapKeyRef", "fieldRef"))

    secret_key_ref: KeySelector | None = Field(
        default=None, description="A key of a Secret; the value is masked in what Braid shows."
    )
    config_map_key_ref: KeySelector | None = Field(
        default=None, description="A key of a ConfigMap."
    )
    field_ref: FieldSelector | None = Field(default=None, description="A field of the Pod.")

    @model_validator(mode="after")
    def _one_of(self) -> EnvVarSource:
        if (
            sum(
                x is not None
                for x in (self.secret_key_ref, self.config_map_key_ref, self.field_ref)
            )
            != 1
        ):
            raise ValueError("set exactly one of secretKeyRef, configMapKeyRef or fieldRef")
        return self


class EnvVar(Model):
    """An environment variable of a container step: a value, or a value from a Secret, a
    ConfigMap or the Pod (the Kubernetes EnvVar shape)."""

    model_config = _cel_rules(
        ("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both")
    )

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str | None = Field(
        default=None, description="Value; may contain ${{ <CEL> }} interpolations."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Read the value from a Secret, a ConfigMap or the Pod."
    )

    @model_validator(mode="after")
    def _not_both(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class ObjectRef(Model):
    """A Secret or ConfigMap in the run's namespace, whole."""

    name: str = Field(pattern=OBJECT_NAME, max_length=253, description="Its name.")
    optional: bool | None = Field(default=None, description="true: a missing one is not an error.")


class EnvFromSource(Model):
    """Every key of a Secret or ConfigMap as environment variables. Set exactly one."""

    model_config = _cel_rules(_exactly_one("secretRef", "configMapRef"))

    prefix: str | None = Field(
        default=None, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Put before each key."
    )
    secret_ref: ObjectRef | None = Field(
        default=None, description="A Secret; its values are masked in what Braid shows."
    )
    config_map_ref: ObjectRef | None = Field(default=None, description="A ConfigMap.")

    @model_validator(mode="after")
    def _one_of(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("set exactly one of secretRef or configMapRef")
        return self


class SecretSource(Model):
    """Where a webhook value comes from."""

    secret_key_ref: KeySelector = Field(description="A key of a Secret in the run's namespace.")


class SecretValue(Model):
    """A value read from a Secret when the call is made (by the operator, or locally from
    --secrets or the environment), never stored in the run, masked in what it returns."""

    value_from: SecretSource = Field(description="The Secret key holding the value.")
    prefix: str | None = Field(
        default=None, max_length=64, description="Put before the value, e.g. 'Bearer '."
    )


class ResourceRequirements(Model):
    """Compute resources of a container step, as in a Pod's container."""

    requests: dict[str, str] | None = Field(default=None, description="Minimum resources.")
    limits: dict[str, str] | None = Field(default=None, description="Maximum resources.")


ARTIFACT_PATH = r"^[-_a-zA-Z0-9][-._a-zA-Z0-9]*(/[-_a-zA-Z0-9][-._a-zA-Z0-9]*)*$"


class ArtifactInput(Model):
    """A file the step finds under $BRAID_INPUTS before its command starts."""

    from_: Expression = Field(
        alias="from",
        min_length=1,
        description="CEL giving an artifact of an upstream step, e.g. "
        "steps.write.artifacts['report.md'] (or its uri).",
    )
    path: str = Field(
        pattern=ARTIFACT_PATH,
        description="Where it goes, relative to $BRAID_INPUTS (letters, digits, '-._/', no '..').",
    )


class StepInputs(Model):
    """What the step reads before it starts."""

    artifacts: list[ArtifactInput] | None = Field(
        default=None, max_length=50, description="Artifacts put under $BRAID_INPUTS."
    )


class ArtifactLimits(Model):
    """How much a step attempt may write under $BRAID_ARTIFACTS."""

    max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Total bytes of one attempt's artifacts (default: the workflow's, else "
        "1 GiB); more fails the attempt with ArtifactTooLarge.",
    )
    max_files: int | None = Field(
        default=None,
        ge=0,
        le=40,
        description="Most files (default 20, at most 40: a Pod reports them in its 4 KiB "
        "termination message; put many files in one archive). 0: the step writes no "
        "artifacts, and in a cluster its Pod gets no artifact sidecar.",
    )


class RunArtifactLimits(Model):
    """Artifact limits for every step of the run, and for the run as a whole."""

    max_bytes_per_step: int | None = Field(
        default=None, ge=0, description="Default maxBytes of a step attempt (1 GiB)."
    )
    max_files_per_step: int | None = Field(
        default=None, ge=0, le=40, description="Default maxFiles of a step attempt (20)."
    )
    max_bytes_per_run: int | None = Field(
        default=None,
        ge=0,
        description="Total bytes of all the run's artifacts (default 10 GiB): an attempt "
        "starts with what is left as its own limit.",
    )


class ContainerSpec(Model):
    """Run a container. Locally the command runs as a process and the image is ignored."""

    run_as: Literal["Pod", "Job"] | None = Field(
        default=None,
        description="Pod (default): each attempt is a Pod owned by the run. Job: each attempt "
        "is a batch/v1 Job (backoffLimit 0, so retries stay Braid's; evictions and preemption "
        "do not count), for queueing systems that admit Jobs, such as Kueue: set its "
        "kueue.x-k8s.io/queue-name label in podTemplate.metadata.labels, which the Job carries "
        "too.",
    )

    image: str = Field(
        min_length=1, max_length=1024, description="Container image used in a cluster."
    )
    command: list[str] | None = Field(
        default=None,
        description="Entrypoint; each item may contain ${{ <CEL> }} interpolations.",
    )
    args: list[str] | None = Field(
        default=None, description="Arguments; each may contain ${{ <CEL> }} interpolations."
    )
    env: list[EnvVar] | None = Field(
        default=None,
        description="Environment variables: value (with ${{ }}), or valueFrom a secretKeyRef, "
        "configMapKeyRef or fieldRef, as in a Pod.",
    )
    env_from: list[EnvFromSource] | None = Field(
        default=None, description="Every key of a Secret or ConfigMap as a variable."
    )
    inputs: StepInputs | None = Field(
        default=None,
        description="Artifacts of upstream steps put under $BRAID_INPUTS before the command "
        "starts (Argo's inputs.artifacts).",
    )
    artifact_limits: ArtifactLimits | None = Field(
        default=None,
        description="Limits on the files the step writes under $BRAID_ARTIFACTS, each of "
        "which becomes an artifact: steps.<name>.artifacts['<file>'] with size, sha256, uri.",
    )
    working_dir: str | None = Field(default=None, description="Working directory.")
    resources: ResourceRequirements | None = Field(default=None, description="Resources.")
    pod_template: dict[str, JSON] | None = Field(
        default=None,
        description="A partial Pod merged into the step's Pod in a cluster: metadata.labels and "
        "annotations; spec.nodeSelector, tolerations, affinity, topologySpreadConstraints, "
        "priorityClassName, runtimeClassName, schedulerName, volumes (configMap, secret, "
        "emptyDir, projected, downwardAPI, persistentVolumeClaim, ephemeral, csi), "
        "securityContext, imagePullSecrets, dns*, hostAliases, terminationGracePeriodSeconds, "
        "serviceAccountName (only one the operator admin allows); containers[0] with resources, "
        "env, envFrom, volumeMounts, securityContext, ports, imagePullPolicy. Everything must "
        "meet the operator's Pod Security level (--pod-security, default restricted); Braid's "
        "name, namespace, owner and braid.dev/ labels always win.",
    )


class Approvers(Model):
    """Who may decide an approval gate. Empty means anyone allowed to annotate the run."""

    users: list[str] | None = Field(default=None, description="User names that may decide.")
    groups: list[str] | None = Field(default=None, description="Groups whose members may decide.")


class SleepSpec(Model):
    """Wait, then succeed (Argo's suspend with a duration): for durationSeconds, or until a
    time. Outputs: {sleptSeconds, until}."""

    model_config = _cel_rules(_exactly_one("durationSeconds", "until"))

    duration_seconds: int | None = Field(
        default=None, ge=0, le=31_536_000, description="How long to wait (up to a year)."
    )
    until: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="When to wake: an RFC 3339 time with its offset, e.g. "
        "2026-12-24T18:00:00Z; may hold ${{ }}. A time already past does not wait.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> SleepSpec:
        if (self.duration_seconds is None) == (self.until is None):
            raise ValueError("set exactly one of durationSeconds or until")
        return self


class SubWorkflowSpec(Model):
    """Run another workflow as this step (Argo's template reference, Tekton's pipeline in a
    pipeline): a child WorkflowRun owned by this run, whose outputs become the step's. Set
    exactly one of name or spec."""

    model_config = _cel_rules(_exactly_one("name", "spec"))

    name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=NAME_MAX,
        description="A Workflow in the run's namespace (locally: one of the files given to "
        "braid run). The child runs it as it is when the child starts.",
    )
    spec: dict[str, JSON] | None = Field(
        default=None,
        description="An inline workflow spec (what a Workflow's spec holds); validated with "
        "the run, errors named under this field.",
    )
    params: dict[str, JSON] | None = Field(
        default=None,
        description="The child's params; values may hold ${{ }} (e.g. item, steps.x.outputs).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> SubWorkflowSpec:
        if (self.name is None) == (self.spec is None):
            raise ValueError("set exactly one of name or spec")
        return self


class ApprovalTimeoutAction(StrEnum):
    REJECT = "Reject"
    APPROVE = "Approve"


class ApprovalSpec(Model):
    """Wait for people to approve before the workflow goes on."""

    model_config = _cel_rules(
        (
            (
                "!has(self.approvers) || has(self.approvers.groups) || !has(self.approvers.users)"
                " || !has(self.required) || self.required <= size(self.approvers.users)"
            ),
            "required is larger than the number of approvers listed, so it can never be met",
        )
    )

    message: str | None = Field(
        default=None,
        description="What the approvers are asked; may contain ${{ <CEL> }} interpolations.",
    )
    approvers: Approvers | None = Field(default=None, description="Who may decide.")
    required: int = Field(
        default=1, ge=1, le=20, description="Number of distinct approvals needed (quorum)."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, description="How long to wait for a decision."
    )
    on_timeout: ApprovalTimeoutAction = Field(
        default=ApprovalTimeoutAction.REJECT,
        description="What a timeout means: Reject (the step fails) or Approve.",
    )

    @model_validator(mode="after")
    def _quorum_reachable(self) -> ApprovalSpec:
        a = self.approvers
        if a is not None and a.users and not a.groups and self.required > len(a.users):
            raise ValueError(
                f"required={self.required} but only {len(a.users)} approver(s) are listed, so "
                "the gate could never open; lower required or add approvers"
            )
        return self


class LLMEndpoint(Model):
    """Where the model is served: any OpenAI-compatible Chat Completions API (OpenAI, Azure,
    vLLM, Ollama, LiteLLM, llama.cpp's server, ...)."""

    base_url: str = Field(
        alias="baseURL",
        min_length=1,
        max_length=2048,
        description="Base URL, e.g. https://api.openai.com/v1 (POST <baseURL>/chat/completions); "
        "may contain ${{ }}.",
    )
    api_key: SecretValue | None = Field(
        default=None,
        description="{valueFrom: {secretKeyRef: {name, key}}}: sent as 'Authorization: Bearer "
        "<key>', read when the call is made, masked in everything Braid shows.",
    )


class RoutingStrategy(StrEnum):
    ORDERED = "Ordered"
    LOWEST_LATENCY = "LowestLatency"
    HIGHEST_SUCCESS = "HighestSuccess"
    CHEAPEST = "Cheapest"


class RoutingSpec(Model):
    """How an attempt picks one of the candidates, from statistics every run routing with the
    same key shares (EWMA latency and success rate per candidate, a breaker per candidate).
    Ordered: the first whose breaker is closed; LowestLatency / HighestSuccess: the best by
    its statistics (candidates without any are tried first, in order); Cheapest: the lowest
    declared cost. A retry moves on to a candidate that has not failed this step yet."""

    key: str = Field(
        pattern=KEY_PATTERN,
        max_length=63,
        description="Statistics and breakers are shared by every run routing with this key.",
    )
    strategy: RoutingStrategy = Field(
        default=RoutingStrategy.ORDERED,
        description="Ordered, LowestLatency, HighestSuccess or Cheapest.",
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=1000, description="Consecutive failures opening a candidate's breaker."
    )
    cool_down_seconds: int = Field(
        default=30, ge=1, le=86400, description="How long a candidate's breaker stays open."
    )


class RouteCandidate(Model):
    """One place the call may go. Unset fields are the step's own."""

    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description="Candidate name.")
    endpoint: LLMEndpoint | None = Field(default=None, description="llm: the API and its key.")
    model: str | None = Field(
        default=None, min_length=1, max_length=256, description="llm: the model; may hold ${{ }}."
    )
    url: str | None = Field(
        default=None, min_length=1, max_length=2048, description="webhook: the URL to call."
    )
    cost_per_input_token: float | None = Field(
        default=None, ge=0, description="llm: cost of a prompt token (counted in usage.cost)."
    )
    cost_per_output_token: float | None = Field(
        default=None, ge=0, description="llm: cost of a completion token."
    )
    cost_per_call: float | None = Field(default=None, ge=0, description="Cost of each call.")


class WebhookSpec(Model):
    """Make one HTTP call; the response becomes the step's outputs."""

    url: str | SecretValue = Field(
        description="URL to call; may contain ${{ <CEL> }} interpolations; or "
        "{valueFrom: {secretKeyRef: {name, key}}} to read it from a Secret."
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        default="POST", description="HTTP method."
    )
    headers: dict[str, str | SecretValue] | None = Field(
        default=None,
        description="Request headers; values may contain interpolations, or be "
        "{valueFrom: {secretKeyRef: {name, key}}} (e.g. Authorization: the Secret holds "
        "'Bearer sk-...').",
    )
    body: JSON = Field(
        default=None,
        description="Request body: a string, or any JSON value sent as JSON. String leaves may "
        "contain interpolations; a leaf that is exactly ${{ <CEL> }} takes the value's type; "
        "a leaf {valueFrom: {secretKeyRef: {name, key}}} is read from a Secret.",
    )
    success_condition: Expression | None = Field(
        default=None,
        description="CEL over `response` (status, headers, body) that must be true for success. "
        "Default: response.status >= 200 && response.status < 300.",
    )
    output: Expression | None = Field(
        default=None,
        description="CEL over `response` giving the step's outputs (a map). Default: "
        "{'status': response.status, 'body': response.body}.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Timeout of the HTTP call; default the step's timeoutSeconds, else 30. "
        "Without a step timeoutSeconds the attempt's deadline is this plus 10 seconds, so an "
        "operator restarted mid-call retries it instead of waiting forever.",
    )
    candidates: list[RouteCandidate] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="URLs the call may go to instead of url, chosen per attempt by routing.",
        json_schema_extra=_MAP_LIST,
    )
    routing: RoutingSpec | None = Field(
        default=None, description="How candidates are chosen; required with candidates."
    )


class LLMSpec(Model):
    """Call a model (Chat Completions) from the operator, without a Pod; the same locally.
    Outputs: content, json (with responseSchema), toolCalls [{id, name, arguments}],
    finishReason, model, usage {inputTokens, outputTokens, tokens} (which budgets count)."""

    endpoint: LLMEndpoint = Field(description="The API and its key.")
    model: str = Field(min_length=1, max_length=256, description="Model name; may hold ${{ }}.")
    messages: JSON = Field(
        description="The conversation: a list of {role, content} (content may hold ${{ }}), or "
        "one ${{ <CEL> }} giving the list (e.g. a loop's growing history)."
    )
    tools: list[dict[str, JSON]] | None = Field(
        default=None,
        max_length=128,
        description="Function tools in the API's shape: {type: function, function: {name, "
        "description, parameters}}. The reply's calls are outputs.toolCalls.",
    )
    response_schema: dict[str, JSON] | None = Field(
        default=None,
        description="JSON Schema the reply must be: sent as response_format json_schema; the "
        "content must parse and validate, else the attempt fails with reason InvalidResponse "
        "(retried like any failure). The parsed reply is outputs.json.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens in the reply.")
    timeout_seconds: int | None = Field(
        default=None, ge=1, description="Timeout of the HTTP call (default 60)."
    )
    candidates: list[RouteCandidate] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Endpoints/models the call may go to, chosen per attempt by routing; "
        "the chosen one and why are in the step's status (route).",
        json_schema_extra=_MAP_LIST,
    )
    routing: RoutingSpec | None = Field(
        default=None, description="How candidates are chosen; required with candidates."
    )

    def as_webhook(self) -> WebhookSpec:
        """The HTTP call it is: how an llm step runs, with the webhook machinery (the
        destination policy, Secret reading, masking, deadlines)."""
        base = self.endpoint.base_url
        base = base.removesuffix("/")
        headers: dict[str, str | SecretValue] = {}
        if self.endpoint.api_key is not None:
            headers["authorization"] = self.endpoint.api_key.model_copy(
                update={"prefix": self.endpoint.api_key.prefix or "Bearer "}
            )
        body: dict[str, JSON] = {"model": self.model, "messages": self.messages}
        if self.tools:
            body["tools"] = list(self.tools)
        if self.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": self.response_schema},
            }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return WebhookSpec(
            url=f"{base}/chat/completions",
            method="POST",
            headers=headers,
            body=body,
            timeout_seconds=self.timeout_seconds or 60,
        )


class Backoff(Model):
    """Exponential backoff between attempts: min(initial * factor^(n-1), max) ± jitter."""

    initial_delay_seconds: float = Field(default=1.0, ge=0, description="First delay.")
    factor: float = Field(default=2.0, ge=1, description="Multiplier per attempt.")
    max_delay_seconds: float = Field(default=300.0, ge=0, description="Cap on the delay.")
    jitter: float = Field(
        default=0.1, ge=0, le=1, description="Fraction of the delay randomised (0 to 1)."
    )


class RetryOn(Model):
    """Which failures are retried. Unset lists mean every failure is retried."""

    reasons: list[FailureReason] | None = Field(
        default=None,
        description="Failure reasons to retry: Error, TimedOut, OutputInvalid, OutputTooLarge, "
        "WebhookFailed, StartFailed, CircuitOpen, PodLost, PodConflict.",
    )
    exit_codes: list[int] | None = Field(
        default=None, description="For reason Error: only these exit codes are retried."
    )


class RetryPolicy(Model):
    """Retry failed attempts of a step. Without backoff, retries wait 1 s, 2 s, 4 s, ...
    (up to 300 s, ±10 %): Argo retries at once when no backoff is given, which turns a
    rate-limited model endpoint into a retry storm; set backoff.initialDelaySeconds: 0 for
    Argo's behaviour."""

    limit: int = Field(default=0, ge=0, le=100, description="Retries after the first attempt.")
    backoff: Backoff | None = Field(
        default=None,
        description="Delay between attempts; default 1 s doubling to at most 300 s, 10 % jitter.",
    )
    retry_on: RetryOn | None = Field(default=None, description="Which failures are retried.")
    expression: Expression | None = Field(
        default=None,
        description="CEL deciding whether to retry, over lastRetry (exitCode, reason, message, "
        "outputs, attempt, durationSeconds of the attempt that failed), params and steps, "
        "e.g. lastRetry.reason == 'TimedOut' || lastRetry.exitCode == 75. Checked after "
        "retryOn and within limit.",
    )
    max_duration_seconds: int | None = Field(
        default=None,
        ge=1,
        description="No retry starts later than this many seconds after the first attempt "
        "started (Argo's backoff.maxDuration).",
    )


class StepAction(Model):
    """A container or webhook action: the body of compensation and finally steps."""

    model_config = _cel_rules(_exactly_one("container", "webhook"))

    container: ContainerSpec | None = Field(default=None, description="Run a container.")
    webhook: WebhookSpec | None = Field(default=None, description="Make an HTTP call.")
    retry: RetryPolicy | None = Field(default=None, description="Retry policy.")
    timeout_seconds: int | None = Field(default=None, ge=1, description="Per-attempt timeout.")

    @model_validator(mode="after")
    def _exactly_one_action(self) -> StepAction:
        if (self.container is None) == (self.webhook is None):
            raise ValueError("set exactly one of container or webhook")
        return self


class StepSLA(Model):
    """Service-level target of one step."""

    max_duration_seconds: int = Field(
        ge=1, description="The step is late once it has run (including retries) this long."
    )


class ConcurrencySpec(Model):
    """A limit shared by every run: at most ``limit`` attempts holding ``key`` at once (for
    example five calls to one model across all runs). Waiting attempts say so in their status."""

    key: str = Field(
        pattern=KEY_PATTERN, max_length=63, description="Name of the shared pool (a label value)."
    )
    limit: int = Field(ge=1, le=10000, description="Most attempts holding the key at once.")


class RunConcurrencySpec(Model):
    """A run queue shared by the namespace (Argo's workflow-level synchronization): at most
    ``limit`` runs holding ``key`` run at once; the rest wait Pending (reason Queued, with
    their position) and start in priority order, then creation order."""

    key: str = Field(pattern=KEY_PATTERN, max_length=63, description="Name of the queue.")
    limit: int = Field(ge=1, le=10000, description="Most runs holding the key at once.")
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Higher starts first; a run's spec.priority overrides it.",
    )


class CircuitBreakerSpec(Model):
    """A breaker shared by every run: after ``failureThreshold`` consecutive failed attempts
    behind ``key`` it opens for ``coolDownSeconds``; attempts then fail fast (reason
    CircuitOpen) or run ``fallback``; after the cool-down one attempt probes (half-open) and
    its result closes or reopens the breaker."""

    key: str = Field(
        pattern=KEY_PATTERN, max_length=63, description="The endpoint or model the breaker guards."
    )
    failure_threshold: int = Field(
        default=5, ge=1, le=1000, description="Consecutive failures that open the breaker."
    )
    cool_down_seconds: int = Field(
        default=60, ge=1, le=86400, description="How long it stays open before a probe."
    )
    fallback: StepAction | None = Field(
        default=None,
        description="Run this instead while the breaker is open (e.g. a cheaper model); its "
        "outputs become the step's.",
    )


class CacheSpec(Model):
    """Memoization: a success's outputs (and artifacts) are reused by later attempts whose
    key is the same, instead of running again."""

    key: Expression = Field(
        description="CEL giving the cache key (any JSON; e.g. params.url + ':' + "
        "steps.fetch.outputs.sha). Include everything the result depends on: runs of any "
        "workflow with the same key share the entry."
    )
    max_age_seconds: int | None = Field(
        default=None, ge=1, description="Entries older than this are not reused; default forever."
    )


class ContinueOn(Model):
    """Outcomes of a step that do not stop the run (Argo's continueOn)."""

    failed: bool = Field(
        default=False,
        description="Its failure (after retries) does not fail the run: steps that depend on "
        "it run and can branch on steps.<name>.phase, reason, message and exitCode.",
    )


class _StepBase(Model):
    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=NAME_MAX,
        description="Unique step name (DNS label). Expressions refer to it as steps.<name> or "
        'steps["<name>"].',
    )
    description: str | None = Field(
        default=None, max_length=MAX_TEXT, description="What the step does."
    )
    when: Expression | None = Field(
        default=None, description="CEL; the step runs only when true, else it is Skipped."
    )
    container: ContainerSpec | None = Field(default=None, description="Run a container.")
    webhook: WebhookSpec | None = Field(default=None, description="Make an HTTP call.")
    llm: LLMSpec | None = Field(default=None, description="Call a model (Chat Completions).")
    approval: ApprovalSpec | None = Field(default=None, description="Wait for approval.")
    sleep: SleepSpec | None = Field(default=None, description="Wait for a time, then succeed.")
    workflow: SubWorkflowSpec | None = Field(
        default=None, description="Run another workflow as a child run and take its outputs."
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Retry policy; defaults to spec.defaults.retry."
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Timeout of each attempt; defaults to spec.defaults.timeoutSeconds.",
    )
    sla: StepSLA | None = Field(default=None, description="Service-level target of the step.")
    concurrency: ConcurrencySpec | None = Field(
        default=None, description="Hold a slot of a pool shared by all runs while running."
    )
    circuit_breaker: CircuitBreakerSpec | None = Field(
        default=None, description="A circuit breaker shared by all runs."
    )
    continue_on: ContinueOn | None = Field(
        default=None, description="Outcomes that do not fail the run (a failure as a branch)."
    )
    cache: CacheSpec | None = Field(
        default=None,
        description="Reuse the outputs of an earlier success with the same key (container, "
        "webhook, llm steps, and each item of a fan-out).",
    )

    @property
    def continues_on_failure(self) -> bool:
        return bool(self.continue_on and self.continue_on.failed)


class SuccessThreshold(Model):
    """How many items must succeed; set count or fraction, not both."""

    model_config = _cel_rules(_exactly_one("count", "fraction"))

    count: int | None = Field(default=None, ge=0, description="Number of items.")
    fraction: float | None = Field(
        default=None, ge=0, le=1, description="Fraction of the items, rounded up."
    )

    @model_validator(mode="after")
    def _one_of(self) -> SuccessThreshold:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("set exactly one of count or fraction")
        return self


class ThresholdAction(StrEnum):
    CANCEL_REMAINING = "CancelRemaining"
    WAIT_FOR_ALL = "WaitForAll"


class FanOutCase(Model):
    """One way to run an item: the first case whose `when` holds for the item runs it (e.g.
    the tool a model's tool call names)."""

    # "exactly one of container, webhook, llm, workflow" is checked by lint and the operator: a
    # rule this deep (steps, loop body, cases) is beyond the API server's CEL cost budget.

    name: str = Field(
        pattern=NAME_PATTERN, max_length=NAME_MAX, description="Name of the case (e.g. the tool)."
    )
    when: Expression = Field(
        description="CEL over `item` and `index` (and what the step sees), e.g. "
        "item.name == 'search'."
    )
    container: ContainerSpec | None = Field(default=None, description="Run a container.")
    webhook: WebhookSpec | None = Field(default=None, description="Make an HTTP call.")
    llm: LLMSpec | None = Field(default=None, description="Call a model.")
    workflow: SubWorkflowSpec | None = Field(default=None, description="Run a sub-workflow.")

    @model_validator(mode="after")
    def _one_of(self) -> FanOutCase:
        kinds = (self.container, self.webhook, self.llm, self.workflow)
        if sum(x is not None for x in kinds) != 1:
            raise ValueError("set exactly one of container, webhook, llm or workflow")
        return self


class FanOutSpec(Model):
    """Run one action per item (orchestrator-worker); outputs are gathered in item order.

    The action is container, webhook, llm or workflow, or `cases`: per item, the first case
    whose `when` holds (an item no case matches fails with reason NoCaseMatched). Downstream
    steps read steps.<name>.outputs.items (each item's outputs, null where it did not
    succeed), .succeeded, .failed and .total."""

    # "exactly one of items, itemsExpression, itemsFrom" is checked by lint and the operator
    # only: items are free-form JSON, and a field without a schema type is invisible to the API
    # server's CEL.
    model_config = _cel_rules(_exactly_one("container", "webhook", "llm", "workflow", "cases"))

    items: list[JSON] | None = Field(
        default=None, description="Literal list of items; each is `item` in expressions."
    )
    items_expression: Expression | None = Field(
        default=None,
        description="CEL yielding the list of items, e.g. steps.plan.outputs.topics.",
    )
    items_from: Expression | None = Field(
        default=None,
        description="CEL giving an artifact that holds a JSON list of items, e.g. "
        "steps.plan.artifacts['items.json']: 10,000 items need not live in the run object.",
    )
    parallelism: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Items running at once (also bounded by maxParallel); default 100.",
    )
    success_threshold: SuccessThreshold | None = Field(
        default=None, description="Items that must succeed; default all."
    )
    on_threshold_reached: ThresholdAction = Field(
        default=ThresholdAction.CANCEL_REMAINING,
        description="CancelRemaining: finish the step as soon as the threshold is met and "
        "cancel the rest; WaitForAll: let every item finish.",
    )
    max_items: int = Field(
        default=10000, ge=1, le=100000, description="Refuse to fan out over more items."
    )
    fail_fast: bool = Field(
        default=True,
        description="true: once so many items failed that the threshold cannot be met, the "
        "step fails and unfinished items are cancelled. false: every item runs (failures are "
        "retried as usual), and the outcome is decided when all have finished.",
    )
    container: ContainerSpec | None = Field(default=None, description="Per-item container.")
    webhook: WebhookSpec | None = Field(default=None, description="Per-item HTTP call.")
    llm: LLMSpec | None = Field(default=None, description="Per-item model call.")
    workflow: SubWorkflowSpec | None = Field(
        default=None, description="Per-item sub-workflow (a child run per item)."
    )
    cases: list[FanOutCase] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Choose the action per item: the first case whose `when` holds runs it.",
        json_schema_extra=_MAP_LIST,
    )

    @model_validator(mode="after")
    def _one_of(self) -> FanOutSpec:
        given = (self.items, self.items_expression, self.items_from)
        if sum(x is not None for x in given) != 1:
            raise ValueError("set exactly one of items, itemsExpression or itemsFrom")
        actions = (self.container, self.webhook, self.llm, self.workflow, self.cases)
        if sum(x is not None for x in actions) != 1:
            raise ValueError("set exactly one of container, webhook, llm, workflow or cases")
        return self


class LoopStep(_StepBase):
    """A step inside a loop body: container, webhook, llm, approval, sleep, workflow or fanOut
    (e.g. one tool call per item of the model's toolCalls)."""

    model_config = _cel_rules(
        _exactly_one("container", "webhook", "llm", "approval", "sleep", "workflow", "fanOut")
    )

    fan_out: FanOutSpec | None = Field(
        default=None, description="Run an action per item (items or itemsExpression)."
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> LoopStep:
        kinds = [self.container, self.webhook, self.llm, self.approval, self.sleep]
        if sum(k is not None for k in [*kinds, self.workflow, self.fan_out]) != 1:
            raise ValueError(
                "set exactly one of container, webhook, llm, approval, sleep, workflow or fanOut"
            )
        return self


class MaxIterationsAction(StrEnum):
    FAIL = "Fail"
    SUCCEED = "Succeed"


class LoopSpec(Model):
    """Repeat a sequence of steps until a condition holds (ReAct, maker-checker).

    Downstream steps read steps.<name>.outputs.iterations (per iteration, body step name ->
    outputs), .last, .count and .converged."""

    steps: list[LoopStep] = Field(
        min_length=1,
        max_length=20,
        description="The body, run in order each iteration.",
        json_schema_extra=_MAP_LIST,
    )
    until: Expression = Field(
        description="CEL checked after each iteration; true ends the loop. steps.<body-step> "
        "are that iteration's, `iteration` is its index (from 0)."
    )
    max_iterations: int = Field(ge=1, le=1000, description="Upper bound on iterations.")
    on_max_iterations: MaxIterationsAction = Field(
        default=MaxIterationsAction.FAIL,
        description="Fail (reason MaxIterationsReached) or Succeed when the bound is hit.",
    )


class Step(_StepBase):
    """One node of the workflow graph. Set exactly one of container, webhook, llm, approval,
    sleep, workflow, fanOut or loop."""

    model_config = _cel_rules(
        _exactly_one(
            "container", "webhook", "llm", "approval", "sleep", "workflow", "fanOut", "loop"
        ),
        (
            "!has(self.dependsOn) || !(self.name in self.dependsOn)",
            "a step cannot depend on itself",
        ),
    )

    depends_on: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Steps that must finish first. Without it the step depends on the previous "
        "step in the list (sequential); use [] to start at once.",
    )
    fan_out: FanOutSpec | None = Field(default=None, description="Run an action per item.")
    loop: LoopSpec | None = Field(default=None, description="Repeat a body of steps.")
    compensation: StepAction | None = Field(
        default=None,
        description="Undo action, run if the run fails or is cancelled after this step "
        "succeeded (in reverse completion order).",
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        kinds = [self.container, self.webhook, self.llm, self.approval, self.sleep]
        if sum(k is not None for k in [*kinds, self.workflow, self.fan_out, self.loop]) != 1:
            raise ValueError(
                "set exactly one of container, webhook, llm, approval, sleep, workflow, fanOut "
                "or loop"
            )
        return self

    @property
    def kind(self) -> str:
        kinds = ("container", "webhook", "llm", "approval", "sleep", "workflow", "fan_out", "loop")
        for kind in kinds:
            if getattr(self, kind) is not None:
                return "fanOut" if kind == "fan_out" else kind
        raise AssertionError("validated step has a kind")


class FinallyStep(StepAction):
    """A step run after everything else (and after compensation), whatever the outcome.
    Expressions read run.phase (Succeeded, Failed or Cancelled so far), run.failures (step,
    reason, message of each failed step), run.durationSeconds, and the steps."""

    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description="Unique step name.")
    when: Expression | None = Field(
        default=None,
        description="CEL; the finally step runs only when true, e.g. run.phase == 'Failed'.",
    )
    depends_on: list[str] | None = Field(
        default=None,
        max_length=20,
        description="Finally steps that must finish first (whatever their outcome). Without "
        "it a finally step starts at once: finally steps run in parallel.",
    )

    model_config = _cel_rules(_exactly_one("container", "webhook"))


class SLASpec(Model):
    """Service-level targets; breaches set the SLABreached condition while the run goes on."""

    max_duration_seconds: int | None = Field(
        default=None, ge=1, description="The run is late once it has run this long."
    )
    step_max_duration_seconds: int | None = Field(
        default=None, ge=1, description="Default target for every step without its own sla."
    )


class CompensationPolicy(Model):
    """How compensation runs after a failure."""

    enabled: bool = Field(default=True, description="Run compensation steps at all.")
    on_cancel: bool = Field(default=True, description="Also compensate when cancelled.")


class BudgetAction(StrEnum):
    FAIL = "Fail"
    PAUSE = "Pause"
    COMPENSATE = "Compensate"


BUDGET_GATE = "budget"


class BudgetSpec(Model):
    """Token and cost budget of one run. Steps report usage in their outputs as
    ``{"usage": {"tokens": 1200, "cost": 0.03}}``; the run adds it up in ``status.usage``."""

    model_config = _cel_rules(
        ("has(self.tokens) || has(self.cost)", "a budget needs tokens, cost or both"),
    )

    tokens: int | None = Field(default=None, ge=1, description="Most tokens the run may use.")
    cost: float | None = Field(
        default=None, gt=0, description="Most cost the run may incur (in the unit steps report)."
    )
    on_exceeded: BudgetAction = Field(
        default=BudgetAction.FAIL,
        description="Fail: stop the run now (running steps are cancelled, no compensation). "
        "Pause: start nothing new until someone approves the gate 'budget' "
        "(approve.braid.dev/budget), then go on without a budget; a rejection fails the run "
        "with compensation. Compensate: stop and run compensation.",
    )
    approvers: Approvers | None = Field(
        default=None, description="Who may approve going over budget (Pause); default anyone."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget needs tokens, cost or both")
        return self


class PodGCStrategy(StrEnum):
    NEVER = "Never"
    ON_POD_COMPLETION = "OnPodCompletion"
    ON_RUN_COMPLETION = "OnRunCompletion"


class PodGC(Model):
    """When finished step pods are deleted. Their results are in the run's status first."""

    strategy: PodGCStrategy = Field(
        default=PodGCStrategy.NEVER,
        description="Never; OnPodCompletion: as soon as the run's status records the result; "
        "OnRunCompletion: all of the run's pods once it finishes.",
    )


class TTLStrategy(Model):
    """When a finished run is deleted (with its pods and events)."""

    seconds_after_completion: int | None = Field(
        default=None, ge=0, description="After any outcome."
    )
    seconds_after_success: int | None = Field(
        default=None, ge=0, description="After success; overrides secondsAfterCompletion."
    )
    seconds_after_failure: int | None = Field(
        default=None, ge=0, description="After failure or cancellation; overrides it too."
    )

    def seconds(self, succeeded: bool) -> int | None:
        specific = self.seconds_after_success if succeeded else self.seconds_after_failure
        return specific if specific is not None else self.seconds_after_completion


class Defaults(Model):
    """Defaults applied to every step that does not set its own."""

    retry: RetryPolicy | None = Field(default=None, description="Default retry policy.")
    timeout_seconds: int | None = Field(default=None, ge=1, description="Default timeout.")


class WorkflowSpec(Model):
    """The desired shape of every run of this workflow."""

    description: str | None = Field(
        default=None, max_length=MAX_TEXT, description="What the workflow does."
    )
    params: list[ParamSpec] | None = Field(default=None, description="Declared inputs.")
    steps: list[Step] = Field(
        min_length=1, max_length=10000, description="The steps.", json_schema_extra=_MAP_LIST
    )
    finally_: list[FinallyStep] | None = Field(
        default=None,
        alias="finally",
        max_length=20,
        json_schema_extra=_MAP_LIST,
        description="Steps run at the end whatever the outcome (after compensation).",
    )
    outputs: dict[str, Expression] | None = Field(
        default=None, description="Run outputs: name -> CEL evaluated when the run succeeds."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, description="Deadline of the whole run; then it fails TimedOut."
    )
    max_parallel: int | None = Field(
        default=None, ge=1, description="Most step attempts running at once in one run."
    )
    concurrency: RunConcurrencySpec | None = Field(
        default=None,
        description="Queue the runs: at most limit runs with this key run at once in the "
        "namespace.",
    )
    fail_fast: bool = Field(
        default=True,
        description="true: after a step fails nothing new starts; steps already running, and "
        "their retries, finish; then compensation and finally run (Argo's dag.failFast). "
        "false: steps that do not depend on the failure keep starting; steps downstream of "
        "it are Skipped (UpstreamFailed); the run fails once everything has finished.",
    )
    sla: SLASpec | None = Field(default=None, description="Service-level targets.")
    artifact_limits: RunArtifactLimits | None = Field(
        default=None, description="Limits on artifacts, per step attempt and per run."
    )
    compensation: CompensationPolicy | None = Field(
        default=None, description="Compensation behaviour."
    )
    defaults: Defaults | None = Field(default=None, description="Step defaults.")
    budget: BudgetSpec | None = Field(
        default=None, description="Token and cost budget of each run, and what happens past it."
    )
    pod_gc: PodGC | None = Field(
        default=None, alias="podGC", description="When finished step pods are deleted."
    )
    ttl_strategy: TTLStrategy | None = Field(
        default=None, description="When finished runs are deleted."
    )

    def param_specs(self) -> list[ParamSpec]:
        return self.params or []


class Workflow(Model):
    """A reusable workflow definition."""

    api_version: Literal["braid.dev/v1alpha1"] = "braid.dev/v1alpha1"
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowSpec
