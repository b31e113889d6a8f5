"""A deterministic OpenAI-compatible Chat Completions server for the tests, on loopback: real
HTTP with the real request and reply shapes (messages, tools, tool_calls, response_format,
usage, 429 with Retry-After). Replies are scripted: each test queues what the next calls
get; every request is kept for the test to look at."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import serve


def reply(
    content: str | None = None,
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
    *,
    model: str = "test-model",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
) -> dict[str, Any]:
    """A Chat Completions response body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class Scripted:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelServer:
    url: str  # the baseURL: <url>/chat/completions is the API
    key: str
    script: list[Scripted] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds each reply takes (benchmarks)

    def then(self, body: Any, status: int = 200, **headers: str) -> ModelServer:
        self.script.append(Scripted(status, body, headers))
        return self


@contextlib.contextmanager
def model_server(key: str = "sk-test-model-key-0123") -> Iterator[ModelServer]:
    state = ModelServer("", key)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.requests.append(
                    {"path": self.path, "auth": self.headers.get("authorization"), "body": body}
                )
                if self.path != "/v1/chat/completions":
                    answer = Scripted(404, {"error": {"message": f"no route {self.path}"}})
                elif self.headers.get("authorization") != f"Bearer {state.key}":
                    answer = Scripted(401, {"error": {"message": "Incorrect API key provided"}})
                elif state.script:
                    answer = state.script.pop(0)
                else:
                    answer = Scripted(200, reply("(nothing scripted)"))
            if state.delay:
                time.sleep(state.delay)
            payload = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in answer.headers.items():
                self.send_header(k.replace("_", "-"), v)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    with serve(Handler) as url:
        state.url = f"{url}/v1"
        yield state
