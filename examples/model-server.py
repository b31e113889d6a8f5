"""A stand-in model API for the examples: OpenAI-compatible POST /v1/chat/completions with
deterministic rule-based "models" (the request and reply shapes are the real ones: messages,
tools, tool_calls, response_format, usage), plus one tool API for the ReAct example.
Every model needs the key 'demo-key' (examples/model-api.yaml).

    demo-classifier   labels a support ticket: {"label", "confidence"}       (04-routing, 13-llm)
    demo-planner      splits "Task: ..." into {"subtasks": [...]}       (03-orchestrator-worker)
    demo-writer       does a "Subtask: ..."; drafts a note with the "Feedback: ..." it gets
    demo-reviewer     scores a draft: {"score", "feedback"}                  (06-maker-checker)
    demo-agent        answers "which port has the higher tide" with tools    (05-react-loop)
    demo-large        always overloaded: HTTP 503, Retry-After: 0            (13-llm's failover)
    GET /tools/tides?port=Brest   {"port", "metres"}: the agent's tide_table tool

Run it with `python3 examples/model-server.py 8090`; it serves on 127.0.0.1 only.
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WORDS = {
    "billing": ("invoice", "charge", "refund", "bill"),
    "technical": ("error", "down", "crash", "login", "bug"),
}
TIDES = {"Brest": 6.9, "Cadiz": 3.2, "Dover": 6.7, "Lisbon": 3.8}
WANTED = ["audience", "date", "price"]


def text_of(messages: list, role: str) -> str:
    said = [m.get("content") or "" for m in messages if m.get("role") == role]
    return said[-1] if said else ""


def classifier(messages: list) -> dict:
    ticket = text_of(messages, "user").lower().rsplit("ticket:", 1)[-1]
    label = next((k for k, ws in WORDS.items() if any(w in ticket for w in ws)), "general")
    confidence = 0.9 if label != "general" else 0.5
    return {"content": json.dumps({"label": label, "confidence": confidence})}


def planner(messages: list) -> dict:
    task = text_of(messages, "user").split("Task:", 1)[-1].strip()
    parts = ("research", "messaging", "timeline", "budget")
    return {"content": json.dumps({"subtasks": [f"{p} for: {task}" for p in parts]})}


def writer(messages: list) -> dict:
    asked = text_of(messages, "user")
    if asked.startswith("Subtask:"):
        part = asked.removeprefix("Subtask:").split(" for:")[0].strip()
        return {"content": f"{part.upper()} done"}
    feedback = asked.split("Feedback:", 1)[-1] if "Feedback:" in asked else ""
    items = [f.strip() for f in feedback.split(",") if f.strip()]
    return {"content": "Launch note" + "".join(f" +{f}" for f in items)}


def reviewer(messages: list) -> dict:
    draft = text_of(messages, "user")
    missing = [w for w in WANTED if w not in draft]
    present = [w for w in WANTED if w in draft]
    score = round(1 - len(missing) / len(WANTED), 2)
    # Feedback accumulates: ask for everything still missing, two at a time.
    return {"content": json.dumps({"score": score, "feedback": present + missing[:2]})}


def agent(messages: list) -> dict:
    """Look the tides up (in parallel), subtract with the calculator, then answer."""
    question = text_of(messages, "user")
    ports = [p for p in TIDES if p in question][:2] or ["Brest", "Cadiz"]
    observed = [m.get("content") or "" for m in messages if m.get("role") == "tool"]
    heights = {}
    for said in observed:
        found = re.match(r"(\w+) high tide ([\d.]+) m", said)
        if found:
            heights[found.group(1)] = float(found.group(2))
    difference = next((s.split("=")[-1].strip() for s in observed if "=" in s), None)
    if len(heights) < len(ports):
        return {"tool_calls": [("tide_table", {"port": p}) for p in ports]}
    (a, ha), (_, hb) = sorted(heights.items(), key=lambda kv: -kv[1])[:2]
    if difference is None:
        return {"tool_calls": [("calculator", {"expression": f"{ha} - {hb}"})]}
    return {"content": f"{a} has the higher tide today, by {difference} m."}


MODELS = {
    "demo-classifier": classifier,
    "demo-planner": planner,
    "demo-writer": writer,
    "demo-reviewer": reviewer,
    "demo-agent": agent,
}


def completion(model: str, said: dict, prompt_words: int) -> dict:
    message = {"role": "assistant", "content": said.get("content")}
    calls = said.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
    completion_tokens = len((said.get("content") or "").split()) + 8 * len(calls) + 4
    return {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_words + completion_tokens,
        },
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        port = (parse_qs(url.query).get("port") or [""])[0]
        if url.path != "/tools/tides" or port not in TIDES:
            self.answer(404, {"error": f"no tide table for {port!r}"})
            return
        self.answer(200, {"port": port, "metres": TIDES[port]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self.answer(404, {"error": {"message": f"no route {self.path}"}})
            return
        if self.headers.get("authorization") != "Bearer demo-key":
            self.answer(401, {"error": {"message": "Incorrect API key provided"}})
            return
        model = request.get("model", "")
        if model == "demo-large":
            overloaded = {"error": {"message": "The server is overloaded"}}
            self.answer(503, overloaded, {"retry-after": "0"})
            return
        if model not in MODELS:
            self.answer(404, {"error": {"message": f"The model {model!r} does not exist"}})
            return
        messages = request.get("messages") or []
        words = sum(len(str(m.get("content") or "").split()) for m in messages)
        self.answer(200, completion(model, MODELS[model](messages), words))

    def answer(self, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
