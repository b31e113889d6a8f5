"""A stand-in for a model API, for the llm example: an OpenAI-compatible
POST /v1/chat/completions that labels a support ticket by its words and answers in the
shape the step's responseSchema asks for, with usage. Needs the key 'demo-key'.

Run it with `python examples/13-llm/server.py 8090`; it serves on 127.0.0.1 only.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = {
    "billing": ("invoice", "charge", "refund", "bill"),
    "technical": ("error", "down", "crash", "login"),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self.answer(404, {"error": {"message": f"no route {self.path}"}})
            return
        if self.headers.get("authorization") != "Bearer demo-key":
            self.answer(401, {"error": {"message": "Incorrect API key provided"}})
            return
        text = " ".join(str(m.get("content", "")) for m in request.get("messages", [])).lower()
        ticket = text.rsplit("ticket:", 1)[-1]
        label = next((k for k, ws in WORDS.items() if any(w in ticket for w in ws)), "general")
        content = json.dumps({"label": label, "confidence": 0.9 if label != "general" else 0.5})
        words = len(text.split())
        self.answer(
            200,
            {
                "id": "chatcmpl-demo",
                "object": "chat.completion",
                "model": request.get("model", "demo-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": 12,
                    "total_tokens": words + 12,
                },
            },
        )

    def answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
