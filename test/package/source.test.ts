// Inside the repository, "pgconverge" must resolve to the TypeScript sources (the
// pgconverge-source export condition that .taprc, the npm scripts and the bin set), never to a
// dist/ that may be stale, or two copies of every module would be loaded at once.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import t from "tap";

const SOURCE_ENTRY = new URL("../../src/index.ts", import.meta.url).href;

t.test("the tests resolve pgconverge to src/index.ts", async (t) => {
  t.equal(import.meta.resolve("pgconverge"), SOURCE_ENTRY);
});

t.test("task files loaded by the repository's CLI get the same sources", async (t) => {
  const dir = fileURLToPath(new URL("../fixtures/resolve_probe/", import.meta.url));
  const bin = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));
  const result = spawnSync(process.execPath, [bin, "worker", "--tasks", dir], {
    env: { ...process.env, DATABASE_URL: "postgres://127.0.0.1:1/none", NODE_OPTIONS: "" },
    encoding: "utf8",
  });
  t.match(result.stderr, `resolved ${SOURCE_ENTRY}\n`);
  t.match(result.stderr, /probe\.mjs must default-export defineTask/);
  t.equal(result.status, 2);
});
