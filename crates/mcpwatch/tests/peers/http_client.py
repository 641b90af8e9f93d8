"""A real MCP client (the official Python SDK) over Streamable HTTP, for the gateway tests.

Usage: http_client.py SCENARIO URL
Runs SCENARIO against the MCP endpoint URL and prints one JSON line per response, so a run
directly against the server and a run through `mcpwatch gateway` can be compared line by line.
Environment: MCP_TOKEN (sent as `Authorization: Bearer`). Scenarios:
  everything  tools, echo, get-sum, an unknown tool, resources, a resource read
  longrun     a long-running tool with progress; each line carries `t`, seconds since start
  denied      the tool list, then a call the gateway's policy refuses
  detection   PHASE=work: varied normal work; PHASE=attack: a loop, an unusual call, a traversal
"""

import asyncio
import json
import os
import sys
import time

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
try:
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # SDK 1.x spelling
    from mcp.shared.exceptions import McpError

START = time.monotonic()


def dump(step, value, timed=False):
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    line = {"step": step, "value": value}
    if timed:
        line["t"] = round(time.monotonic() - START, 3)
    print(json.dumps(line, sort_keys=True), flush=True)


async def step(name, coro):
    try:
        dump(name, await coro)
    except McpError as e:
        dump(name, {"error": {"code": e.error.code, "message": e.error.message}})


async def everything(s):
    tools = await s.list_tools()
    dump("tools", sorted(t.name for t in tools.tools))
    await step("echo", s.call_tool("echo", {"message": "hello through the gateway"}))
    await step("get-sum", s.call_tool("get-sum", {"a": 2, "b": 3}))
    await step("no-such-tool", s.call_tool("no-such-tool", {}))
    resources = await s.list_resources()
    dump("resources", sorted(r.uri for r in resources.resources)[:5])
    await step("read", s.read_resource("demo://resource/static/document/architecture.md"))


async def longrun(s):
    async def progress(p, total, message):
        dump("progress", {"progress": p, "total": total}, timed=True)

    result = await s.call_tool(
        "trigger-long-running-operation", {"duration": 3, "steps": 3}, progress_callback=progress
    )
    dump("result", result, timed=True)


async def denied(s):
    tools = await s.list_tools()
    dump("tools", sorted(t.name for t in tools.tools))
    await step("denied", s.call_tool("get-sum", {"a": 1, "b": 1}))
    await step("allowed", s.call_tool("echo", {"message": "still allowed"}))


async def detection(s):
    """PHASE=work: varied normal work, with a status echo that recurs among other calls.
    PHASE=attack: the same echo ten times in a row, a call with a never-seen key and a 6 kB
    message, and a `../` path."""
    echo = lambda message, **extra: s.call_tool("echo", {"message": message, **extra})
    if os.environ.get("PHASE") == "work":
        for i in range(14):
            await step(f"note_{i}", echo(f"note {i}: " + "word " * (i % 5)))
            await step(f"sum_{i}", s.call_tool("get-sum", {"a": i, "b": i + 1}))
            await step(f"status_{i}", echo("status"))
        return
    for i in range(10):
        await step(f"loop_{i}", echo("status"))
    await step("unusual", echo("x" * 6000, exec="id"))
    await step("traversal", echo("../../../etc/passwd"))


async def main():
    scenario, url = sys.argv[1], sys.argv[2]
    headers = {}
    if os.environ.get("MCP_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["MCP_TOKEN"]
    timeout = httpx2.Timeout(30.0, read=60.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as (r, w):
            async with ClientSession(r, w) as s:
                init = await s.initialize()
                dump("initialize", {"server": init.server_info.name, "protocol": init.protocol_version})
                await {"everything": everything, "longrun": longrun, "denied": denied, "detection": detection}[scenario](s)


asyncio.run(main())
