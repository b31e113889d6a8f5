"""The web UI: a Starlette app whose pages are rendered on the server and kept live with
server-sent events fed by API-server watches (htmx swaps them in).

Every request to the API server is made as the person at the browser: with ``braid ui`` on a
laptop, as their kubeconfig; in the chart, as the bearer token they signed in with. The UI
holds no rights of its own, decides nothing on anyone's behalf and only says in advance what
the API server will say. See docs/ui.md for the threat model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from braid.api.common import GROUP, VERSION
from braid.api.reasons import APPROVE_PREFIX, REJECT_PREFIX
from braid.api.run import retry_run
from braid.kube.annotations import approval_value
from braid.kube.pods import LABEL_ATTEMPT, LABEL_RUN, LABEL_STEP
from braid.kube.rest import ApiError
from braid.kube.userapi import Identity, UserApi
from braid.ui import forms, views
from braid.ui.live import event as _event
from braid.ui.live import follow
from braid.ui.sessions import COOKIE, TTL, Session, Sessions, csrf_ok

log = structlog.get_logger("braid.ui")
HERE = Path(__file__).parent
LOG_LINES = 200
MAX_REASON = 500


@dataclass
class Settings:
    """``kubeconfig``: act as the kubeconfig's user. ``token``: each person signs in with a
    bearer token, sent to ``server`` (verified with ``ca_file``) and nowhere else."""

    auth: Literal["kubeconfig", "token"] = "kubeconfig"
    kubeconfig: str | None = None
    context: str | None = None
    server: str = ""
    ca_file: str | None = None
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])
    secure_cookies: bool = False
    default_namespace: str = "default"


class SecurityHeaders:
    """No inline script or style may run, no other origin may frame a page or be sent its
    address."""

    POLICY = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [
                    (b"content-security-policy", self.POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        await self.app(scope, receive, headed if scope["type"] == "http" else send)


@dataclass
class Viewer:
    """The person at the browser, as the API server knows them."""

    session: Session
    api: UserApi
    who: Identity


class Ui:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.sessions = Sessions(clock)
        self.local: UserApi | None = None
        self.local_identity: Identity | None = None
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            enable_async=False,
        )
        self.templates.filters["pretty"] = views.pretty
        self.templates.filters["when"] = _when

    # --- who is asking -------------------------------------------------------------------

    async def startup(self) -> None:
        if self.settings.auth == "kubeconfig":
            self.local = await UserApi.from_kubeconfig(
                self.settings.kubeconfig, self.settings.context
            )
            self.settings.default_namespace = self.local.namespace

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for session in list(self.sessions.by_id.values()):
            await self._close(session)
        if self.local is not None:
            await self.local.close()

    async def _close(self, session: Session) -> None:
        if session.api is not None and session.api is not self.local:
            await session.api.close()
        session.api = None

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def viewer(self, request: Request) -> Viewer:
        """The signed-in viewer; raises a redirect to the sign-in page (token mode) when there
        is none. In kubeconfig mode every browser gets a session (for its CSRF token)."""
        for gone in self.sessions.drain():
            await self._close(gone)
        session = self._session(request)
        if self.settings.auth == "token":
            if session is None or session.token is None:
                back = request.url.path if request.method == "GET" else "/runs"
                where = "/login?" + urlencode({"next": back})
                raise HTTPException(303, headers={"Location": where})
            if session.api is None:
                session.api = UserApi.from_token(
                    self.settings.server, session.token, self.settings.ca_file
                )
                session.api.namespace = self.settings.default_namespace
        else:
            if session is None:
                session = self.sessions.new()
                request.state.new_session = session
            session.api = self.local
        assert session.api is not None
        if not session.user:
            try:
                who = await session.api.whoami()
            except ApiError as exc:
                if exc.status == 401:
                    self.sessions.end(session.id)
                    await self._close(session)
                    raise HTTPException(303, headers={"Location": "/login?expired=1"}) from None
                raise
            session.user, session.groups = who.user, who.groups
        return Viewer(session, session.api, Identity(session.user, session.groups))

    def check_csrf(self, request: Request, viewer: Viewer, form: dict[str, str]) -> None:
        """A state-changing request must carry this session's CSRF token and come from a page
        of this origin (SameSite=Strict already keeps the cookie off other sites' requests)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-origin request refused")
        sent = request.headers.get("x-csrf-token") or form.get("csrf")
        if not csrf_ok(viewer.session, sent):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

    async def posted(self, request: Request) -> tuple[Viewer, dict[str, str], str, str]:
        """A form posted about one object: who posts, what (its CSRF token checked), and the
        namespace and name in its path."""
        viewer = await self.viewer(request)
        form = await _form(request)
        self.check_csrf(request, viewer, form)
        return viewer, form, request.path_params["namespace"], request.path_params["name"]

    def page(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        viewer: Viewer | None = context.get("viewer")
        body = self.templates.get_template(template).render(
            request=request,
            auth=self.settings.auth,
            csrf=viewer.session.csrf if viewer else "",
            user=viewer.who.user if viewer else "",
            **context,
        )
        response = HTMLResponse(body, status_code=status_code)
        new: Session | None = getattr(request.state, "new_session", None)
        if new is not None:
            self.set_cookie(response, new)
        return response

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(TTL),
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/",
        )

    def namespace(self, request: Request, viewer: Viewer) -> str:
        return request.query_params.get("namespace") or viewer.api.namespace

    # --- sign-in (token mode) ---------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if self.settings.auth != "token":
            return RedirectResponse("/runs", 303)
        expired = request.query_params.get("expired") == "1"
        back = _local_path(request.query_params.get("next", ""))
        return self.page(request, "login.html", expired=expired, error="", next=back)

    async def login(self, request: Request) -> Response:
        if self.settings.auth != "token":
            return RedirectResponse("/runs", 303)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-origin request refused")
        form = await request.form()
        token = str(form.get("token") or "").strip()
        back = _local_path(str(form.get("next") or ""))
        if not token or len(token) > 16384 or any(c.isspace() for c in token):
            return self.page(request, "login.html", 400, error="Paste a bearer token.", next=back)
        api = UserApi.from_token(self.settings.server, token, self.settings.ca_file)
        try:
            who = await api.whoami()
        except ApiError as exc:
            await api.close()
            said = "the API server did not accept this token" if exc.status == 401 else exc.message
            return self.page(request, "login.html", 401, error=said, next=back)
        old = self.sessions.end(request.cookies.get(COOKIE))
        if old is not None:
            await self._close(old)
        session = self.sessions.new(token)
        session.api, session.user, session.groups = api, who.user, who.groups
        api.namespace = self.settings.default_namespace
        log.info("Signed in", user=who.user)
        response = RedirectResponse(back, 303)
        self.set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        self.check_csrf(request, viewer, dict((await request.form()).items()))  # type: ignore[arg-type]
        ended = self.sessions.end(viewer.session.id)
        if ended is not None:
            await self._close(ended)
        response = RedirectResponse("/login" if self.settings.auth == "token" else "/runs", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- runs ----------------------------------------------------------------------------

    def _filters(self, request: Request, viewer: Viewer) -> dict[str, str]:
        q = request.query_params
        phase = q.get("phase", "")
        return {
            "namespace": self.namespace(request, viewer),
            "workflow": q.get("workflow", ""),
            "phase": phase if phase in views.PHASES else "",
        }

    async def runs_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        filters = self._filters(request, viewer)
        namespaces = await viewer.api.namespaces()
        listed = await viewer.api.list_runs(filters["namespace"])
        items = listed.get("items") or []
        return self.page(
            request,
            "runs.html",
            viewer=viewer,
            filters=filters,
            namespaces=namespaces,
            phases=views.PHASES,
            workflows=sorted({views.workflow_of(r) for r in items}),
            rows=views.rows(items, _now(), workflow=filters["workflow"], phase=filters["phase"]),
            events="/events/runs?" + urlencode(filters),
        )

    async def runs_events(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        filters = self._filters(request, viewer)

        def paint(runs: dict[str, dict[str, Any]]) -> str:
            shown = views.rows(
                list(runs.values()),
                _now(),
                workflow=filters["workflow"],
                phase=filters["phase"],
            )
            return self.templates.get_template("_runs_table.html").render(rows=shown)

        return _sse(follow(viewer.api, filters["namespace"], None, paint, "runs"))

    async def run_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        ns, name = request.path_params["namespace"], request.path_params["name"]
        run = await viewer.api.get_run(ns, name)
        return self.page(
            request,
            "run.html",
            viewer=viewer,
            namespace=ns,
            name=name,
            live=self.run_live(run),
            events=f"/events/runs/{ns}/{name}",
        )

    def run_live(self, run: dict[str, Any]) -> str:
        """The parts of a run's page that move: its summary, picture and steps."""
        status = views.status_of(run)
        spec = views.spec_of(run)
        now = _now()
        return self.templates.get_template("_run_live.html").render(
            run=run,
            row=views.run_row(run, now),
            status=run.get("status") or {},
            picture=views.picture(spec, status),
            steps=views.step_rows(status, now),
            finished=(run.get("status") or {}).get("phase") in views.FINISHED,
        )

    async def run_events(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        ns, name = request.path_params["namespace"], request.path_params["name"]

        def paint(runs: dict[str, dict[str, Any]]) -> str:
            run = runs.get(name)
            if run is None:
                return '<p class="error">This run was deleted.</p>'
            return self.run_live(run)

        return _sse(follow(viewer.api, ns, name, paint, "run"))

    async def step_panel(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        p = request.path_params
        ns, name, step = p["namespace"], p["name"], p["step"]
        run = await viewer.api.get_run(ns, name)
        detail = views.step_detail(views.spec_of(run), views.status_of(run), step)
        if detail is None:
            raise HTTPException(404, f"run {name} has no step {step!r}")
        logs, pod, said = "", "", ""
        attempts: list[views.Attempt] = []
        try:
            pods = await viewer.api.list_pods(
                ns, f"{LABEL_RUN}={name[:63]},{LABEL_STEP}={step[:63]}"
            )
            attempts = views.attempts_of(pods, run["metadata"].get("uid", ""), LABEL_ATTEMPT)
            wanted = request.query_params.get("pod")
            shown = next(
                (a for a in attempts if a.pod == wanted), attempts[-1] if attempts else None
            )
            if shown is not None:
                pod = shown.pod
                logs = await viewer.api.pod_log(ns, pod, "step", LOG_LINES)
        except ApiError as exc:
            said = exc.message
        return self.page(
            request,
            "_step.html",
            viewer=viewer,
            d=detail,
            pod=pod,
            logs=logs,
            log_error=said,
            attempts=attempts,
            base=f"/runs/{ns}/{name}/steps/{step}",
        )

    async def gantt(self, request: Request) -> Response:
        """The timeline, as a picture of this version of the run (a PNG: the page's policy
        runs no inline style, and matplotlib's SVG is made of them)."""
        viewer = await self.viewer(request)
        ns, name = request.path_params["namespace"], request.path_params["name"]
        run = await viewer.api.get_run(ns, name)
        status = views.status_of(run)
        if status is None or not status.steps or status.start_time is None:
            return HTMLResponse('<p class="muted">No step has started yet.</p>')
        version = run["metadata"]["resourceVersion"]
        return HTMLResponse(
            f'<img alt="the run\'s timeline" src="/runs/{ns}/{name}/gantt.png?v={version}">'
        )

    async def gantt_png(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        run = await viewer.api.get_run(
            request.path_params["namespace"], request.path_params["name"]
        )
        status, spec = views.status_of(run), views.spec_of(run)
        if status is None or status.start_time is None:
            raise HTTPException(404, "no step has started yet")
        # matplotlib loads only to draw, as in `braid analyze --gantt`.
        from braid.analysis.gantt import gantt_png  # noqa: PLC0415

        png = await asyncio.to_thread(gantt_png, status, "", spec)
        return Response(png, media_type="image/png")

    async def cancel(self, request: Request) -> Response:
        viewer, _, ns, name = await self.posted(request)
        await viewer.api.patch_run(ns, name, {"spec": {"cancelled": True}})
        log.info("Cancelled run", run=name, namespace=ns, user=viewer.who.user)
        return RedirectResponse(f"/runs/{ns}/{name}", 303)

    async def retry(self, request: Request) -> Response:
        viewer, form, ns, name = await self.posted(request)
        old = await viewer.api.get_run(ns, name)
        try:
            manifest = retry_run(old, viewer.who.user, form.get("from") or None)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        created = await viewer.api.create_run(ns, manifest.wire())
        return RedirectResponse(f"/runs/{ns}/{created['metadata']['name']}", 303)

    # --- workflows -----------------------------------------------------------------------

    async def workflows_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        ns = self.namespace(request, viewer)
        listed = await viewer.api.list_workflows(ns)
        items = sorted(listed.get("items") or [], key=lambda w: w["metadata"]["name"])
        return self.page(
            request,
            "workflows.html",
            viewer=viewer,
            namespace=ns,
            namespaces=await viewer.api.namespaces(),
            workflows=[
                {
                    "name": w["metadata"]["name"],
                    "description": (w.get("spec") or {}).get("description", ""),
                    "steps": len((w.get("spec") or {}).get("steps") or []),
                    "runs": ((w.get("status") or {}).get("analysis") or {}).get("runs", ""),
                }
                for w in items
            ],
        )

    async def workflow_page(
        self,
        request: Request,
        typed: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        viewer = await self.viewer(request)
        ns, name = request.path_params["namespace"], request.path_params["name"]
        workflow = await viewer.api.get_workflow(ns, name)
        spec = views.spec_of({}, workflow)
        runs = await viewer.api.list_runs(ns)
        items = [r for r in runs.get("items") or [] if views.workflow_of(r) == name]
        import yaml  # noqa: PLC0415 - only this page shows YAML

        return self.page(
            request,
            "workflow.html",
            status_code,
            viewer=viewer,
            namespace=ns,
            name=name,
            yaml=yaml.safe_dump(workflow.get("spec") or {}, sort_keys=False),
            analysis=(workflow.get("status") or {}).get("analysis") or {},
            rows=views.rows(items, _now())[:20],
            fields=forms.fields(spec, typed, errors) if spec else [],
            invalid="" if spec else "this Workflow's spec cannot be read",
            errors=errors or {},
        )

    async def start_run(self, request: Request) -> Response:
        viewer, form, ns, name = await self.posted(request)
        workflow = await viewer.api.get_workflow(ns, name)
        spec = views.spec_of({}, workflow)
        if spec is None:
            raise HTTPException(422, "this Workflow's spec cannot be read")
        typed = {k[len("param.") :]: v for k, v in form.items() if k.startswith("param.")}
        params, errors = forms.params_from(spec, typed)
        if errors:
            return await self.workflow_page(request, typed, errors, 422)
        run: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkflowRun",
            "metadata": {
                "generateName": f"{name[:50]}-",
                "labels": {"braid.dev/workflow": name[:63]},
            },
            "spec": {"workflowRef": {"name": name}, **({"params": params} if params else {})},
        }
        try:
            created = await viewer.api.create_run(ns, run)
        except ApiError as exc:
            if exc.status == 422:
                return await self.workflow_page(request, typed, {"": exc.message}, 422)
            raise
        log.info(
            "Started run", run=created["metadata"]["name"], workflow=name, user=viewer.who.user
        )
        return RedirectResponse(f"/runs/{ns}/{created['metadata']['name']}", 303)

    # --- approvals -----------------------------------------------------------------------

    async def approvals_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        ns = self.namespace(request, viewer)
        listed = await viewer.api.list_runs(ns)
        open_gates = views.gates(listed.get("items") or [], viewer.who, APPROVE_PREFIX)
        open_gates.sort(
            key=lambda g: (not g.allowed, g.deadline or datetime.max.replace(tzinfo=UTC))
        )
        return self.page(
            request,
            "approvals.html",
            viewer=viewer,
            namespace=ns,
            namespaces=await viewer.api.namespaces(),
            gates=open_gates,
            said=request.query_params.get("said", ""),
        )

    async def decide(self, request: Request) -> Response:
        """Approve or reject exactly the inputs the page showed (their digest came with the
        form): when the gate has moved on since, nothing is written and the page says so."""
        viewer = await self.viewer(request)
        form = await _form(request)
        self.check_csrf(request, viewer, form)
        p = request.path_params
        ns, name, step = p["namespace"], p["run"], p["step"]
        decision, digest = form.get("decision"), form.get("digest", "")
        back = f"/approvals?{urlencode({'namespace': ns})}"
        run = await viewer.api.get_run(ns, name)
        gate = next(
            (g for g in views.gates([run], viewer.who, APPROVE_PREFIX) if g.step == step), None
        )
        if gate is None:
            return self._said(
                back, f"{step} of {name} is no longer waiting for a decision", bad=True
            )
        if gate.digest != digest:
            return self._said(
                back,
                f"the inputs of {step} changed since the page was shown: "
                "look again before deciding",
                bad=True,
            )
        meta = {"resourceVersion": gate.resource_version}
        if decision == "approve":
            value = approval_value(gate.existing, viewer.who.user, digest)
            patch = {"metadata": {**meta, "annotations": {APPROVE_PREFIX + step: value}}}
        elif decision == "reject":
            reason = " ".join(form.get("reason", "").split())[:MAX_REASON]
            if not reason:
                return self._said(back, "a rejection needs a reason", bad=True)
            patch = {
                "metadata": {
                    **meta,
                    "annotations": {REJECT_PREFIX + step: f"{viewer.who.user}: {reason}"},
                }
            }
        else:
            raise HTTPException(400, "decision must be approve or reject")
        try:
            await viewer.api.patch_run(ns, name, patch)
        except ApiError as exc:
            log.info(
                "Decision refused", run=name, step=step, user=viewer.who.user, status=exc.status
            )
            return self._said(back, f"The API server refused: {exc.message}", bad=True)
        log.info("Decided", run=name, step=step, decision=decision, user=viewer.who.user)
        done = "approved" if decision == "approve" else "rejected"
        return self._said(back, f"{done} {step} of {name} as {viewer.who.user}")

    def _said(self, back: str, text: str, *, bad: bool = False) -> Response:
        mark = "!" if bad else ""
        return RedirectResponse(f"{back}&{urlencode({'said': mark + text})}", 303)

    # --- the app -------------------------------------------------------------------------

    def app(self) -> Starlette:
        def wrapped(
            handler: Callable[[Request], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except ApiError as exc:
                    code = exc.status if 400 <= exc.status < 600 else 502
                    return self.page(request, "error.html", code, message=exc.message)

            return handle

        routes = [
            Route("/", lambda _: RedirectResponse("/runs", 303)),
            Route("/login", self.login_page),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", wrapped(self.logout), methods=["POST"]),
            Route("/runs", wrapped(self.runs_page)),
            Route("/events/runs", wrapped(self.runs_events)),
            Route("/runs/{namespace}/{name}", wrapped(self.run_page)),
            Route("/events/runs/{namespace}/{name}", wrapped(self.run_events)),
            Route("/runs/{namespace}/{name}/steps/{step}", wrapped(self.step_panel)),
            Route("/runs/{namespace}/{name}/gantt", wrapped(self.gantt)),
            Route("/runs/{namespace}/{name}/gantt.png", wrapped(self.gantt_png)),
            Route("/runs/{namespace}/{name}/cancel", wrapped(self.cancel), methods=["POST"]),
            Route("/runs/{namespace}/{name}/retry", wrapped(self.retry), methods=["POST"]),
            Route("/workflows", wrapped(self.workflows_page)),
            Route("/workflows/{namespace}/{name}", wrapped(self.workflow_page)),
            Route("/workflows/{namespace}/{name}/runs", wrapped(self.start_run), methods=["POST"]),
            Route("/approvals", wrapped(self.approvals_page)),
            Route("/approvals/{namespace}/{run}/{step}", wrapped(self.decide), methods=["POST"]),
            Route("/healthz", lambda _: Response("ok")),
            Route("/favicon.ico", lambda _: Response(status_code=204)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(TrustedHostMiddleware, allowed_hosts=self.settings.allowed_hosts),
                Middleware(SecurityHeaders),
            ],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self.lifespan,
        )

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code in (301, 302, 303, 307) and exc.headers:
            return Response(status_code=exc.status_code, headers=exc.headers)
        return self.page(request, "error.html", exc.status_code, message=exc.detail)


def _local_path(path: str) -> str:
    """Where to go after signing in: a path of this UI only (never another site's address)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/runs"


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=200)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime | str | None) -> str:
    if not value:  # None, "" or a field the object does not have (yet)
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in stream:
                yield chunk
        except ApiError as exc:
            yield _event("failed", f'<p class="error">{escape(exc.message)}</p>')

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn  # noqa: PLC0415 - only the command serves

    ui = Ui(settings)
    uvicorn.run(
        ui.app(),
        host=host,
        port=port,
        log_level="info",
        # The access log names paths only (never a token: those travel in a POST body and a
        # header), but a path can name a run someone would rather not see in a log, so it is
        # the operator's choice (--access-log).
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )


__all__ = ["Settings", "Ui", "serve"]
