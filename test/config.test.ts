import { readFileSync } from "node:fs";
import t from "tap";
import { CONFIG_VARIABLES, CoreShape, loadConfig } from "../src/config.ts";
import { loadPipelineConfig, PipelineShape } from "../pipeline/config.ts";

const read = (file: string) => readFileSync(new URL(`../${file}`, import.meta.url), "utf8");

// The core's variables and the reference pipeline's (read by pgconverge.config.ts).
const ALL_VARIABLES = [...CONFIG_VARIABLES, ...Object.keys(PipelineShape.shape)];

t.test(".env.example and the README's table document every variable, and nothing else", async (t) => {
  const example = new Set([...read(".env.example").matchAll(/^#? ?([A-Z][A-Z0-9_]+)=/gm)].map((match) => match[1]!));
  const table = new Set([...read("README.md").matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((match) => match[1]!));
  t.same([...example].sort(), [...ALL_VARIABLES].sort(), ".env.example");
  t.same([...table].sort(), [...ALL_VARIABLES].sort(), "README configuration table");
});

t.test("the defaults in .env.example are the defaults loadConfig applies", async (t) => {
  const defaults = { ...loadConfig({}), ...loadPipelineConfig({}) };
  for (const [, name, value] of read(".env.example").matchAll(/^([A-Z][A-Z0-9_]+)=(.*)$/gm)) {
    t.equal(String(defaults[name as keyof typeof defaults]), value, name!);
  }
});

t.test(".env.example keeps the reference pipeline's settings in a section of their own", async (t) => {
  const [core = "", pipeline = ""] = read(".env.example").split(/^# -+ The reference pipeline .*$/m);
  const names = (text: string) => [...text.matchAll(/^#? ?([A-Z][A-Z0-9_]+)=/gm)].map((match) => match[1]!).sort();
  t.same(names(pipeline), Object.keys(PipelineShape.shape).sort(), "the pipeline section");
  t.same(names(core), Object.keys(CoreShape.shape).sort(), "the queue's section");
});

t.test("Qdrant cluster settings: write ordering and read consistency, with one-line errors", async (t) => {
  t.match(loadConfig({}), { QDRANT_WRITE_ORDERING: "medium", QDRANT_READ_CONSISTENCY: "majority" });
  t.match(loadConfig({ QDRANT_WRITE_ORDERING: "strong", QDRANT_READ_CONSISTENCY: "2" }), { QDRANT_WRITE_ORDERING: "strong", QDRANT_READ_CONSISTENCY: 2 });
  t.throws(() => loadConfig({ QDRANT_WRITE_ORDERING: "fast" }), { name: "ConfigError", message: /^QDRANT_WRITE_ORDERING: .*weak.*medium.*strong.* \(got "fast"\)$/ });
  t.equal(loadConfig({}).QDRANT_GRPC_URL, undefined, "no gRPC unless asked");
  t.equal(loadConfig({ QDRANT_GRPC_URL: "http://qdrant:6334" }).QDRANT_GRPC_URL, "http://qdrant:6334");
  t.throws(() => loadConfig({ QDRANT_GRPC_URL: "qdrant:6334" }), { name: "ConfigError", message: /^QDRANT_GRPC_URL: .*http/ });
  t.throws(() => loadConfig({ QDRANT_READ_CONSISTENCY: "0" }), {
    name: "ConfigError",
    message: 'QDRANT_READ_CONSISTENCY: must be majority, quorum, all or a number of replicas from 1 to 999 (got "0")',
  });
});
