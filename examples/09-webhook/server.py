"""A stand-in for a model API, for the webhook example: POST /classify -> JSON.

Run it with `python3 examples/09-webhook/server.py 8089`; it serves on 127.0.0.1 only.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/classify" or self.headers.get("authorization") != "Bearer demo-token":
            self.send_response(403)
            self.end_headers()
            return
        text = str(body.get("text", ""))
        label = "urgent" if "now" in text.lower() or "!" in text else "normal"
        payload = json.dumps({"ok": True, "label": label, "tokens": len(text.split())}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8089
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
