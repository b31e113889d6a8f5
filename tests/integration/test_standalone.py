"""`braid operator` standalone, as a process, against a loopback server that speaks the API
server's discovery, list and watch: it refuses to start without Braid's CRDs (exit 1, saying
what to install), and with them it follows pods, runs and schedules with its own watches
(a listed schedule's loop reads it), answers /healthz, and stops cleanly on SIGTERM. kopf is
not loaded on the way (it is only for a hot standby). Every e2e test runs the same operator
against the real control plane."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.unit.test_rest import api_server

ROOT = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/braid.dev/v1alpha1"
KINDS = ("workflows", "workflowruns", "workflowschedules")


class ApiServer:
    """Discovery (with or without Braid's kinds), empty listings except one schedule, watches
    held open until released; a GET of the schedule says it is gone."""

    def __init__(self, *, serving: bool) -> None:
        self.serving = serving
        self.asked: list[tuple[str, str, bool]] = []  # (method, path, watch)
        self.watching: set[str] = set()
        self.ready = asyncio.Event()  # three watches open and the schedule read
        self.released = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") == "true"
        self.asked.append((request.method, request.path, watch))
        if request.path == GROUP_PATH:
            if not self.serving:
                return web.json_response({"kind": "Status", "code": 404}, status=404)
            return web.json_response({"resources": [{"name": k} for k in KINDS]})
        resource = request.path.rsplit("/", 1)[-1]
        if watch:
            self.watching.add(resource)
            self._check()
            response = web.StreamResponse()
            await response.prepare(request)
            await self.released.wait()
            await response.write_eof()
            return response
        if resource in ("pods", "workflowruns", "workflowschedules"):
            items: list[dict[str, Any]] = []
            if resource == "workflowschedules":
                items = [{"metadata": {"name": "nightly", "namespace": "ns"}}]
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": items})
        self._check()
        return web.json_response({"kind": "Status", "code": 404}, status=404)

    def _check(self) -> None:
        read = ("GET", f"{GROUP_PATH}/namespaces/ns/workflowschedules/nightly", False)
        if self.watching >= {"pods", "workflowruns", "workflowschedules"} and read in self.asked:
            self.ready.set()


def kubeconfig(tmp: Path, url: str) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "loop", "cluster": {"server": url}}],
                "users": [{"name": "me", "user": {}}],
                "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "me"}}],
                "current-context": "loop",
            }
        )
    )
    return path


async def start_operator(tmp: Path, url: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig(tmp, url))}
    env["PYTHONPATH"] = str(ROOT / "operator")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "braid.cli",
        "operator",
        "--namespace=ns",
        "--metrics-port=0",
        "--log-format=json",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_the_crds_the_operator_exits_saying_what_to_install(tmp_path: Path):
    async def scenario() -> tuple[int, str]:
        server = ApiServer(serving=False)
        async with api_server(server.handle) as url:
            proc = await start_operator(tmp_path, url)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()

    code, out = asyncio.run(scenario())
    assert code == 1, out
    assert "does not serve workflowruns, workflows, workflowschedules" in out
    assert "install the CRDs (kubectl apply -f crds/, or the Helm chart)" in out


def test_standalone_follows_with_its_own_watches_answers_health_and_stops_on_sigterm(
    tmp_path: Path,
):
    port = free_port()

    async def scenario() -> tuple[int, str, list[tuple[int, Any]]]:
        server = ApiServer(serving=True)
        async with api_server(server.handle) as url:
            proc = await start_operator(tmp_path, url, f"--health-port={port}")
            try:
                await asyncio.wait_for(server.ready.wait(), 60)
                answers = [
                    await asyncio.to_thread(get, f"http://127.0.0.1:{port}{path}")
                    for path in ("/healthz", "/metrics")
                ]
                proc.send_signal(signal.SIGTERM)
                out, _ = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                server.released.set()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        return proc.returncode or 0, out.decode(), answers

    code, out, answers = asyncio.run(scenario())
    assert answers == [(200, {"ok": True}), (404, {"error": "not found: try GET /healthz"})]
    assert code == 0, out
    assert '"Stopped operator"' in out


def test_the_standalone_operator_does_not_load_kopf():
    code = "import sys, braid.cli.entry, braid.cli.operator, braid.controller.standalone; "
    loaded = subprocess.run(
        [sys.executable, "-c", code + "print('kopf' in sys.modules)"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
