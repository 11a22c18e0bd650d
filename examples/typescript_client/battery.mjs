// rar-tools seen from a client not written in Python: the TypeScript MCP SDK over stdio or streamable
// HTTP. It starts `rar-tools serve` on tiny (or real) models, checks how the tools present themselves,
// runs the workflow (add, list, retrieve, rank, recognize, regions, detect, tidy, delete) and a set of
// hostile calls that must come back as errors naming the problem, then closes and times the exit.
//
//   npm install                    # @modelcontextprotocol/sdk, pinned in package.json
//   node battery.mjs stdio|http    # settings from the environment, see below
//
// RAR_CMD      the server command as a JSON list (default ["rar-tools"])
// RAR_MODELS   a folder written by `python -m rar_tools.testing.tiny_models`
// RAR_IMAGES   a folder of test pictures: a0-a3.png, b0-b3.jpg, thin.png (`python make_images.py DIR`)
// RAR_PORT     the HTTP port (default 8766)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";

const [exe, ...exeArgs] = JSON.parse(process.env.RAR_CMD || '["rar-tools"]');
const models = process.env.RAR_MODELS;
const images = process.env.RAR_IMAGES;
const port = process.env.RAR_PORT || "8766";
const mode = process.argv[2] || "stdio";
const data = mkdtempSync(join(tmpdir(), "rar-ts-"));
const common = ["--data-dir", data, "--clip-model", `local-dir:${models}/clip`, "--ranker-model", `${models}/mllm`,
  "--detector-model", `${models}/detector`, "--allow-dir", images];
let results = { ok: 0, bad: [] };
const check = (name, cond, detail) => { if (cond) results.ok++; else results.bad.push(`${name}: ${detail ?? ""}`); };
const b64 = (p) => readFileSync(p).toString("base64");
const wrapped = (s) => s.replace(/(.{76})/g, "$1\n");

let client, transport, server, t0 = Date.now();
if (mode === "stdio") {
  transport = new StdioClientTransport({ command: exe, args: [...exeArgs, "serve", ...common], env: { ...process.env, HF_HUB_OFFLINE: "1" }, stderr: "pipe" });
  transport.stderr?.on("data", () => {});
} else {
  server = spawn(exe, [...exeArgs, "serve", "--transport", "http", "--port", port, ...common], { env: { ...process.env, HF_HUB_OFFLINE: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = ""; server.stdout.on("data", (d) => { out += d; }); server.stderr.on("data", () => {});
  server.on("exit", () => check("http stdout empty", out === "", out.slice(0, 200)));
  for (let i = 0; i < 300; i++) { try { await fetch(`http://127.0.0.1:${port}/mcp`); break; } catch { await new Promise(r => setTimeout(r, 100)); } }
  transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`));
}
client = new Client({ name: "ts-battery", version: "1.0.0" });
await client.connect(transport);
console.log(`initialize after ${Date.now() - t0} ms (${mode})`);

const { tools } = await client.listTools();
for (const t of tools) {
  check(`${t.name} title`, !!t.title, "no title");
  check(`${t.name} outputSchema`, !!t.outputSchema, "no outputSchema");
  check(`${t.name} dedented`, !/\n\s{2,}\S/.test(t.description ?? ""), JSON.stringify(t.description).slice(0, 80));
  check(`${t.name} annotations`, t.annotations && typeof t.annotations.readOnlyHint === "boolean", "");
}
console.log(`tools: ${tools.map(t => t.name).join(", ")}`);

async function call(name, args) {
  try { return await client.callTool({ name, arguments: args }); }
  catch (e) { return { isError: true, thrown: true, content: [{ type: "text", text: String(e.message) }] }; }
}
const text = (r) => (r.content?.[0]?.text ?? "");
const good = async (name, args) => { const r = await call(name, args); check(`${name} ok`, !r.isError, text(r).slice(0, 200)); return r; };
const refused = async (label, name, args, expect) => {
  const r = await call(label === "" ? name : name, args);
  check(`refused ${label}`, r.isError && !r.thrown && (!expect || text(r).includes(expect)) && !/pydantic|Arguments'|Traceback/.test(text(r)), text(r).slice(0, 240));
};

await good("add_to_memory", { memory: "birds", images: [`${images}/a0.png`, `${images}/a1.png`], label: "Blue Jay" });
await good("add_to_memory", { memory: "birds", images: [b64(`${images}/b0.jpg`), wrapped(b64(`${images}/b1.jpg`))], label: "Herring Gull" });
await good("add_to_memory", { memory: "birds", labels: ["Blue Jay", "Herring Gull", "café", "cafe\u0301"] });
const listed = await good("list_memories", {});
check("NFC labels", !JSON.stringify(listed.structuredContent).includes("cafe\u0301"), "decomposed label kept");
const r = await good("retrieve_candidates", { memory: "birds", image: b64(`${images}/b2.jpg`), k: 2 });
check("retrieve structured", r.structuredContent?.candidates?.length === 2, JSON.stringify(r.structuredContent).slice(0, 200));
await good("rank_candidates", { image: `${images}/a2.png`, candidates: ["Blue Jay", "Herring Gull"], mode: "score" });
await good("rank_candidates", { image: `${images}/thin.png`, candidates: ["Blue Jay", "Herring Gull"], mode: "score" });
await good("recognize", { memory: "birds", image: `${images}/a3.png`, k: 2, thumbnails: true });
await good("recognize_regions", { memory: "birds", image: `${images}/a3.png`, boxes: [[0, 0, 32, 32], [10, 10, 60, 60]], k: 2 });
await good("detect_objects", { image: `${images}/a3.png`, queries: ["a bird"] });

// tidying a memory (read-only finders, then a relabel that must be idempotent)
await good("find_duplicates", { memory: "birds" });
await good("find_conflicts", { memory: "birds" });
await good("relabel_entries", { memory: "birds", label: "Herring Gull", to_label: "Gull" });
const again = await good("relabel_entries", { memory: "birds", label: "Gull", to_label: "Gull" });
const page = await good("list_memories", { memory: "birds", max_labels: 1 });
check("paged listing", JSON.stringify(page.structuredContent).includes("Gull") || JSON.stringify(page.structuredContent).includes("Blue Jay"), JSON.stringify(page.structuredContent).slice(0, 200));

// hostile
await refused("k=0", "retrieve_candidates", { memory: "birds", image: `${images}/a0.png`, k: 0 }, "k");
await refused("k=true", "retrieve_candidates", { memory: "birds", image: `${images}/a0.png`, k: true }, "k");
await refused("k string", "retrieve_candidates", { memory: "birds", image: `${images}/a0.png`, k: "3" }, "k");
await refused("missing image", "retrieve_candidates", { memory: "birds" }, "image");
await refused("unknown memory", "retrieve_candidates", { memory: "nope", image: `${images}/a0.png` }, "nope");
await refused("outside allow-dir", "retrieve_candidates", { memory: "birds", image: "/etc/passwd" }, "");
await refused("traversal", "retrieve_candidates", { memory: "birds", image: `${images}/../../../etc/hostname` }, "");
await refused("bad memory name", "add_to_memory", { memory: "../x", images: [`${images}/a0.png`], label: "x" }, "memory");
await refused("invisible label", "add_to_memory", { memory: "birds", images: [`${images}/a0.png`], label: "\u200b\u200b" }, "label");
await refused("one candidate", "rank_candidates", { image: `${images}/a0.png`, candidates: ["x"] }, "candidates");
await refused("unknown tool", "no_such_tool", {}, "");
await refused("garbage base64", "retrieve_candidates", { memory: "birds", image: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB" }, "");
await refused("box outside", "retrieve_candidates", { memory: "birds", image: `${images}/a0.png`, box: [100, 100, 200, 200] }, "box");
await refused("extra argument", "list_memories", { bogus: 1 }, "");
await refused("remove unknown label", "remove_from_memory", { memory: "birds", label: "Blue Jai" }, "Blue Jay");
await refused("relabel to an invisible label", "relabel_entries", { memory: "birds", label: "Gull", to_label: "\u200b" }, "label");
await refused("relabel in an unknown memory", "relabel_entries", { memory: "nope", label: "Gull", to_label: "X" }, "nope");
await refused("bad cursor", "list_memories", { memory: "birds", cursor: "\u0000garbage" }, "cursor");
const rm = await call("remove_from_memory", { memory: "birds", entry_ids: ["x1", "x1"] });
check("remove duplicate ids answered", !rm.thrown, text(rm).slice(0, 200));
await good("delete_memory", { memory: "birds" });
await refused("deleted memory gone", "retrieve_candidates", { memory: "birds", image: `${images}/a0.png` }, "birds");

const prompts = await client.listPrompts();
check("prompts listed", prompts.prompts.length > 0, "");
try { await client.getPrompt({ name: "no-such-prompt", arguments: {} }); check("bad prompt refused", false, "no error"); }
catch (e) { check("bad prompt refused", /-32602|unknown prompt/.test(String(e.message)), String(e.message)); }

const stop0 = Date.now();
await client.close();
if (server) { server.kill("SIGTERM"); await new Promise(r => server.on("exit", r)); }
console.log(`closed after ${Date.now() - stop0} ms`);
console.log(`passed ${results.ok}, failed ${results.bad.length}`);
for (const b of results.bad) console.log("FAIL " + b);
rmSync(data, { recursive: true, force: true });
process.exit(results.bad.length ? 1 : 0);
