"""The smallest honest resumable MCP Streamable HTTP server, for the resumed-stream tests (issue
16, item 6). The official SDK's server supports resumption (an EventStore), but it cannot be
made to break a response stream off mid-call, which is what these tests need; this one can.

Usage: resumable_server.py PORT
  POST initialize            JSON answer, Mcp-Session-Id
  POST a notification or a response                          202
  POST tools/call `slow`     an SSE stream (chunked) with one event (`id: N-1`, a log message),
                             then, as told by `params.arguments.end`:
                             `break`: once POST /control/break arrives, the connection is cut
                             mid-body (no final chunk): the stream breaks off;
                             `hold`: the stream stays open without the result until it is
                             resumed (or 30 s pass), then ends.
                             Either way the result is kept as event `N-2`.
  GET with Last-Event-ID N-1 an SSE stream with event N-2 (the result), then the end
  GET otherwise              405 (no standalone stream)
Standard library only.
"""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SESSION = "resumable-session-1"
LOCK = threading.Lock()
KEPT = {}  # last event id -> the event that follows it
RESUMED = {}  # last event id -> threading.Event set when a client resumed after it
BREAK = threading.Event()
NEXT = [0]


def sse(event_id, message):
    return f"id: {event_id}\nevent: message\ndata: {json.dumps(message)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Mcp-Session-Id", SESSION)
        self.end_headers()

    def empty(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        if self.path == "/control/break":
            BREAK.set()
            return self.empty(200)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if "method" not in body or "id" not in body:
            return self.empty(202)
        rid, method = body["id"], body["method"]
        if method == "initialize":
            answer = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": body["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "resumable", "version": "1"},
            }}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Mcp-Session-Id", SESSION)
            self.end_headers()
            self.wfile.write(answer)
            return
        if method != "tools/call":
            return self.empty(202)
        end = body["params"]["arguments"]["end"]
        with LOCK:
            NEXT[0] += 1
            n = NEXT[0]
            first = f"{n}-1"
            resumed = RESUMED[first] = threading.Event()
            KEPT[first] = sse(f"{n}-2", {"jsonrpc": "2.0", "id": rid, "result": {
                "content": [{"type": "text", "text": f"done after {end}"}]}})
        self.start_sse()
        self.chunk(sse(first, {"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": "info", "data": "working"}}))
        if end == "break":
            BREAK.wait(30)
            BREAK.clear()
            # Cut off mid-body: the peer never gets the final chunk.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        resumed.wait(30)
        try:
            self.chunk(b"")
        except OSError:
            pass

    def do_GET(self):
        last = self.headers.get("Last-Event-ID")
        with LOCK:
            event = KEPT.get(last)
            resumed = RESUMED.get(last)
        if event is None:
            return self.empty(405)
        self.start_sse()
        self.chunk(event)
        self.chunk(b"")
        resumed.set()

    def do_DELETE(self):
        self.empty(200)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
