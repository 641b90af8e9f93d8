// A small MCP server on the official TypeScript SDK (the copy scripts/install-peers puts under
// .test-deps/node), for the gateway tests server-everything cannot drive: JSON responses
// (`enableJsonResponse`, where a batch is answered with one JSON array) and an upstream that
// dies in the middle of a call.
//
// Usage: node sdk_server.mjs SDK_DIR PORT MODE
//   SDK_DIR  .test-deps/node/node_modules/@modelcontextprotocol/sdk
//   MODE     json (one JSON body per POST) or sse (an event stream per POST)
// Tools: echo {message}, add {a, b}, secret (for policy to deny) and crash, which sends one
// progress notification and then kills the process, breaking the response stream mid-call.
// Resources: note://public and note://private.

import http from "node:http";
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const [sdkDir, port, mode] = process.argv.slice(2);
const load = (path) => import(pathToFileURL(`${sdkDir}/dist/esm/${path}`).href);
const { Server } = await load("server/index.js");
const { StreamableHTTPServerTransport } = await load("server/streamableHttp.js");
const types = await load("types.js");

const TOOLS = [
  { name: "echo", inputSchema: { type: "object", properties: { message: { type: "string" } } } },
  { name: "add", inputSchema: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } } } },
  { name: "secret", inputSchema: { type: "object", properties: {} } },
  { name: "crash", inputSchema: { type: "object", properties: {} } },
];
const RESOURCES = [
  { uri: "note://public", name: "public" },
  { uri: "note://private", name: "private" },
];

function mcpServer() {
  const server = new Server(
    { name: "sdk-test-server", version: "1.0.0" },
    { capabilities: { tools: {}, resources: {} } },
  );
  server.setRequestHandler(types.ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(types.ListResourcesRequestSchema, async () => ({ resources: RESOURCES }));
  server.setRequestHandler(types.CallToolRequestSchema, async (req, extra) => {
    const args = req.params.arguments ?? {};
    switch (req.params.name) {
      case "echo":
        return { content: [{ type: "text", text: `Echo: ${args.message}` }] };
      case "add":
        return { content: [{ type: "text", text: String(args.a + args.b) }] };
      case "secret":
        return { content: [{ type: "text", text: "the secret" }] };
      case "crash": {
        const progressToken = req.params._meta?.progressToken;
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress: 1, total: 2 },
          });
        }
        setTimeout(() => process.exit(3), 200);
        return new Promise(() => {});
      }
      default:
        throw new types.McpError(types.ErrorCode.InvalidParams, `unknown tool ${req.params.name}`);
    }
  });
  return server;
}

const transports = new Map();

http
  .createServer(async (req, res) => {
    const id = req.headers["mcp-session-id"];
    let transport = id && transports.get(id);
    if (!transport) {
      if (id || req.method !== "POST") {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: mode === "json",
        onsessioninitialized: (sid) => transports.set(sid, transport),
      });
      await mcpServer().connect(transport);
    }
    await transport.handleRequest(req, res);
  })
  .listen(Number(port), "127.0.0.1", () => console.error(`sdk_server (${mode}) listening on ${port}`));
