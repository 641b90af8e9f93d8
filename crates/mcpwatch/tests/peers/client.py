"""A real MCP client (the official Python SDK) for the wrap interop tests.

Usage: client.py SCENARIO -- CMD ARGS...
       client.py SCENARIO --config FILE SERVER
Runs SCENARIO against the stdio server CMD (or the server SERVER of a Claude Desktop style
config FILE, started as the client would: its command, args and env read from the file) and prints one JSON line per response, so a run
directly against the server and a run through `mcpwatch wrap` can be compared byte for byte.
Environment: FS_DIR (filesystem and detection scenarios: the allowed directory), PHASE
(detection scenario: `work` or `attack`), LOAD_CALLS and LOAD_PROGRESS (load scenario: how many
echo calls, 8 at a time, and a file that holds how many have been answered), WAIT_FOR_FILE (keep the
session open until this file exists, at most 60 s).
"""

import asyncio
import json
import os
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
try:
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # SDK 1.x spelling
    from mcp.shared.exceptions import McpError


def dump(step, value):
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    print(json.dumps({"step": step, "value": value}, sort_keys=True), flush=True)


async def step(name, coro):
    try:
        dump(name, await coro)
    except McpError as e:
        dump(name, {"error": {"code": e.error.code, "message": e.error.message}})


async def everything(s):
    tools = await s.list_tools()
    dump("tools", sorted(t.name for t in tools.tools))
    await step("echo", s.call_tool("echo", {"message": "hello through mcpwatch"}))
    await step("get-sum", s.call_tool("get-sum", {"a": 2, "b": 3}))
    await step("no-such-tool", s.call_tool("no-such-tool", {}))
    resources = await s.list_resources()
    dump("resources", sorted(r.uri for r in resources.resources)[:5])
    await step("read", s.read_resource("demo://resource/static/document/architecture.md"))


async def filesystem(s):
    d = os.environ["FS_DIR"]
    await step("list_tools", s.list_tools())
    await step("read_inside", s.call_tool("read_text_file", {"path": os.path.join(d, "a.txt")}))
    await step("read_outside", s.call_tool("read_text_file", {"path": "/etc/hostname"}))
    await step("read_key", s.call_tool("read_text_file", {"path": os.path.join(d, ".ssh", "id_rsa")}))
    await step("list_directory", s.call_tool("list_directory", {"path": d}))


async def detection(s):
    """PHASE=work: varied normal work. PHASE=attack: a loop, an unusual call, a traversal."""
    d = os.environ["FS_DIR"]
    read = lambda args: s.call_tool("read_text_file", args)
    if os.environ.get("PHASE") == "work":
        for i in range(14):
            await step(f"read_{i}", read({"path": os.path.join(d, f"f{i}.txt")}))
            await step(f"list_{i}", s.call_tool("list_directory", {"path": d}))
            await step(f"reread_{i}", read({"path": os.path.join(d, "a.txt")}))
        return
    for i in range(10):
        await step(f"loop_{i}", read({"path": os.path.join(d, "a.txt")}))
    await step("unusual", read({"path": os.path.join(d, "x" * 6000), "exec": "id"}))
    await step("traversal", read({"path": os.path.join(d, "..", "..", "..", "etc", "passwd")}))


async def dotenv(s):
    """Reads a project's .env and copies it, as an agent backing up settings would."""
    d = os.environ["FS_DIR"]
    read = await s.call_tool("read_text_file", {"path": os.path.join(d, ".env")})
    dump("read_env", read)
    text = read.content[0].text
    await step("copy_env", s.call_tool("write_file", {"path": os.path.join(d, "env.backup"), "content": text}))


async def load(s):
    """LOAD_CALLS echo calls, 8 at a time; LOAD_PROGRESS holds how many were answered so far."""
    calls = int(os.environ.get("LOAD_CALLS", "1000"))
    progress = os.environ.get("LOAD_PROGRESS")
    ok = 0
    for start in range(0, calls, 8):
        batch = range(start, min(start + 8, calls))
        results = await asyncio.gather(*(s.call_tool("echo", {"message": f"load {i}"}) for i in batch))
        ok += sum(1 for r in results if not getattr(r, "is_error", getattr(r, "isError", False)))
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(start + len(batch)))
            os.replace(progress + ".tmp", progress)
    dump("load", {"calls": calls, "ok": ok})


async def main():
    scenario, rest = sys.argv[1], sys.argv[2:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and rest[0] == "--config":
        with open(rest[1]) as f:
            entry = json.load(f)["mcpServers"][rest[2]]
        env = dict(os.environ)
        env.update(entry.get("env", {}))
        params = StdioServerParameters(command=entry["command"], args=entry.get("args", []),
                                       env=env, cwd=entry.get("cwd"))
    else:
        params = StdioServerParameters(command=rest[0], args=rest[1:], env=dict(os.environ))
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            init = await s.initialize()
            dump("initialize", {"server": init.server_info.name, "protocol": init.protocol_version})
            await {"everything": everything, "filesystem": filesystem, "dotenv": dotenv, "detection": detection, "load": load}[scenario](s)
            wait = os.environ.get("WAIT_FOR_FILE")
            if wait:
                deadline = time.monotonic() + 60
                while not os.path.exists(wait) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await step("after_wait", s.call_tool("echo", {"message": "still here"}) if scenario == "everything" else s.list_tools())


asyncio.run(main())
