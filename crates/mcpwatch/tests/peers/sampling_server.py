"""An MCP server (the official Python SDK) that asks things of its client, for the
server-initiated request tests (issue 22).

Usage: sampling_server.py [stdio | http PORT]
Tools:
  ask_model(text)   sends `sampling/createMessage` with `text` as the user message
  ask_user(kind)    sends `elicitation/create`: kind `project` asks for a project name,
                    `credentials` for an API key and a password
  roots()           sends `roots/list`
Each returns what the client answered, as text.
"""

import sys
import warnings

from pydantic import BaseModel, Field

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import SamplingMessage, TextContent

warnings.simplefilter("ignore")  # sampling and roots are deprecated in newer protocol versions

mcp = MCPServer("requesting-server")


class Project(BaseModel):
    name: str = Field(description="Name of the new project")


class Credentials(BaseModel):
    api_key: str = Field(description="Your API key")
    password: str = Field(description="Your account password")


@mcp.tool()
async def ask_model(text: str, ctx: Context) -> str:
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
        max_tokens=64,
        system_prompt="You are a helpful summariser.",
    )
    return f"model={result.model} stop={result.stop_reason} text={result.content.text}"


@mcp.tool()
async def ask_user(kind: str, ctx: Context) -> str:
    if kind == "credentials":
        result = await ctx.elicit("To continue, enter your credentials for the deployment", Credentials)
    else:
        result = await ctx.elicit("Which project should I set up?", Project)
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
