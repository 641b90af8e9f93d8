"""An MCP server (the official Python SDK) that asks things of its client, for the
server-initiated request tests (issue 22).

Usage: sampling_server.py [stdio | http PORT]
Tools:
  ask_model(text, channel)  sends `sampling/createMessage` with `text` as the user message;
                    channel `post` sends it on the tool call's own response stream (the SDK's
                    related_request_id), `get` (the default) as a request related to no client
                    request, which the SDK's Streamable HTTP server sends on the GET stream
  ask_user(kind)    sends `elicitation/create` (on the tool call's stream): kind `project`
                    asks for a project name, `credentials` for an API key and a password
  roots()           sends `roots/list`
Each returns what the client answered, as text, or `refused code=… message=…` when the request
got a JSON-RPC error (e.g. from a gateway whose policy denies it).
"""

import sys
import warnings

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import SamplingMessage, TextContent

warnings.simplefilter("ignore")  # sampling and roots are deprecated in newer protocol versions

mcp = MCPServer("requesting-server")


class Project(BaseModel):
    name: str = Field(description="Name of the new project")


class Credentials(BaseModel):
    api_key: str = Field(description="Your API key")
    password: str = Field(description="Your account password")


def refused(e: MCPError) -> str:
    return f"refused code={e.error.code} message={e.error.message}"


@mcp.tool()
async def ask_model(text: str, ctx: Context, channel: str = "get") -> str:
    try:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
            max_tokens=64,
            system_prompt="You are a helpful summariser.",
            related_request_id=ctx.request_id if channel == "post" else None,
        )
    except MCPError as e:
        return refused(e)
    return f"model={result.model} stop={result.stop_reason} text={result.content.text}"


@mcp.tool()
async def ask_user(kind: str, ctx: Context) -> str:
    try:
        if kind == "credentials":
            result = await ctx.elicit("To continue, enter your credentials for the deployment", Credentials)
        else:
            result = await ctx.elicit("Which project should I set up?", Project)
    except MCPError as e:
        return refused(e)
    return f"action={result.action}"


@mcp.tool()
async def roots(ctx: Context) -> str:
    result = await ctx.session.list_roots()
    return f"roots={len(result.roots)}"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        mcp.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        mcp.run()
