"""A Streamable HTTP client that resumes broken response streams with Last-Event-ID, for the
resumed-stream tests (issue 16, item 6), against resumable_server.py (usually through
`mcpwatch gateway`).

Usage: resume_client.py MCP_URL CONTROL_URL
Calls the tool `slow` three times:
  id 2: the server breaks the stream off after its first event (told to through CONTROL_URL
        once the client has that event); the client resumes with Last-Event-ID;
  id 3: the client drops the stream itself after the first event, then resumes;
  id 4: the server breaks the stream off and the client does not resume.
Prints one JSON line per call: the id of the first event, how the stream ended, and the
result text got on the resumed stream. Standard library only.
"""

import http.client
import json
import sys
import urllib.parse
import urllib.request

MCP = urllib.parse.urlsplit(sys.argv[1])
CONTROL = sys.argv[2]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def connect():
    return http.client.HTTPConnection(MCP.hostname, MCP.port, timeout=30)


def events(resp):
    """The SSE events of `resp` as dicts, until it ends; raises if it breaks off (read1, since
    readline takes a body cut off mid-chunk for its end)."""
    buf = b""
    event = {}
    while True:
        while b"\n" not in buf:
            data = resp.read1(65536)
            if not data:
                return
            buf += data
        line, buf = buf.split(b"\n", 1)
        line = line.decode().rstrip("\r")
        if line == "":
            if event:
                yield event
            event = {}
            continue
        key, _, value = line.partition(":")
        event[key] = value[1:] if value.startswith(" ") else value


def post(message):
    conn = connect()
    conn.request("POST", MCP.path, json.dumps(message), HEADERS)
    return conn, conn.getresponse()


def resume(last):
    conn = connect()
    conn.request("GET", MCP.path, headers={**HEADERS, "Last-Event-ID": last})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    for e in events(resp):
        msg = json.loads(e["data"])
        if "result" in msg:
            conn.close()
            return msg["result"]["content"][0]["text"]
    return None


def main():
    conn, resp = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "resume-client", "version": "1"}}})
    HEADERS["Mcp-Session-Id"] = resp.getheader("Mcp-Session-Id")
    HEADERS["MCP-Protocol-Version"] = "2025-06-18"
    resp.read()
    conn.close()
    conn, resp = post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    resp.read()
    conn.close()
    for rid, end, resumes in [(2, "break", True), (3, "hold", True), (4, "break", False)]:
        conn, resp = post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                           "params": {"name": "slow", "arguments": {"end": end}}})
        stream = events(resp)
        first = next(stream)["id"]
        if end == "break":
            urllib.request.urlopen(urllib.request.Request(CONTROL, method="POST"), timeout=30).read()
            try:
                for _ in stream:
                    pass
                how = "ended"
            except (http.client.HTTPException, OSError):
                how = "broke off"
        else:
            how = "dropped by the client"
        conn.close()
        text = resume(first) if resumes else None
        print(json.dumps({"id": rid, "first_event": first, "stream": how, "result": text}), flush=True)


main()
