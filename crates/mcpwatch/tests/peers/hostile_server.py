"""A stdio MCP server whose every string is an XSS payload, for the dashboard's XSS suite.

It speaks newline-delimited JSON-RPC like the official SDK's stdio transport: answers
initialize, tools/list (tool names and descriptions carry payloads) and tools/call (results
carry payloads). Payloads come from the PAYLOADS environment variable (a JSON list).
"""

import json
import os
import sys

PAYLOADS = json.loads(os.environ["PAYLOADS"])


def tools():
    return [
        {
            "name": p,
            "description": "Reads a file. " + p,
            "inputSchema": {"type": "object", "properties": {"path": {"type": "string", "description": p}}},
        }
        for p in PAYLOADS
    ]


def answer(msg):
    method = msg.get("method")
    if method == "initialize":
        return {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": PAYLOADS[0], "version": PAYLOADS[1]},
        }
    if method == "tools/list":
        return {"tools": tools()}
    if method == "tools/call":
        name = msg.get("params", {}).get("name", "")
        return {"content": [{"type": "text", "text": "result " + name + " " + PAYLOADS[2]}], "isError": False}
    return None


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    if "id" not in msg:
        continue
    result = answer(msg)
    if result is None:
        reply = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": PAYLOADS[3]}}
    else:
        reply = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
