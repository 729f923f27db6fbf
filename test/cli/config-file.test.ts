// The CLI reads the application's config file: its commands (listed in --help), its syncs and
// tasks; a bad file is one line with exit 2; without one the CLI runs the core alone.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { createTestDatabase } from "../helpers/db.ts";
import { runCli } from "../helpers/cli.ts";

// Inside the repository, so that the files' `import "pgconverge"` resolves (to this package itself).
const dir = mkdtempSync(join(fileURLToPath(new URL("../", import.meta.url)), ".config-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const NO_DATABASE = { DATABASE_URL: "postgres://127.0.0.1:1/none" };

const write = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};

t.test("this repository's config file adds the pipeline's commands", async (t) => {
  const help = await runCli(["--help"], { env: NO_DATABASE });
  t.equal(help.code, 0);
  t.match(help.stdout, /commands of pgconverge\.config\.ts:\n  ingest <file\|dir\|->/);
  t.match(help.stdout, /\n  search <text>/);
  const usage = await runCli(["search"], { env: NO_DATABASE });
  t.equal(usage.code, 2);
  t.equal(usage.stderr, "pgconverge: search needs the text to look for (see pgconverge --help)\n");
});

t.test("without a config file the CLI runs the core alone", async (t) => {
  const help = await runCli(["--help"], { env: NO_DATABASE, cwd: dir });
  t.equal(help.code, 0);
  t.notMatch(help.stdout, /ingest/);
  const ingest = await runCli(["ingest", "x.md"], { env: NO_DATABASE, cwd: dir });
  t.equal(ingest.code, 2);
  t.equal(ingest.stderr, 'pgconverge: unknown command "ingest" (see pgconverge --help)\n');
  const reconcile = await runCli(["reconcile"], { env: NO_DATABASE, cwd: dir });
  t.equal(reconcile.code, 2);
  t.equal(reconcile.stderr, "pgconverge: reconcile: no syncs declared; declare them in the config file (syncs)\n");
});

t.test("a command of the config file gets its arguments and the database, and its result is the exit code", async (t) => {
  const db = await createTestDatabase(t);
  const file = write(
    "app.config.mjs",
    `import { defineConfig, UsageError } from "pgconverge";
export default defineConfig({
  commands: {
    hello: {
      usage: "hello <name>                  greet, and count the tables",
      async run(args, { db }) {
        if (args.length !== 1) throw new UsageError("hello needs a name");
        const pool = await db();
        const { rows } = await pool.query({ sql: "select count(*)::int as n from outbox", values: [] });
        console.log(\`hello \${args[0]}, outbox \${rows[0].n}\`);
        return 3;
      },
    },
  },
});
`,
  );
  const help = await runCli(["--config", file, "--help"], { env: NO_DATABASE, cwd: dir });
  t.match(help.stdout, /commands of app\.config\.mjs:\n  hello <name> {18}greet/);
  const hello = await runCli(["--config", file, "hello", "ada"], { env: { DATABASE_URL: db.url }, cwd: dir });
  t.equal(hello.stdout, "hello ada, outbox 0\n", hello.stderr);
  t.equal(hello.code, 3);
  const bad = await runCli(["hello"], { env: { ...NO_DATABASE, PGCONVERGE_CONFIG: file }, cwd: dir });
  t.equal(bad.code, 2);
  t.equal(bad.stderr, "pgconverge: hello needs a name (see pgconverge --help)\n");
});

t.test("a bad config file is one line naming it, exit 2", async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ["syntax.mjs", "export default {", /^pgconverge: .*syntax\.mjs: .+\n$/],
    ["none.mjs", "export const x = 1;", /^pgconverge: .*none\.mjs: must export default defineConfig\(\{\.\.\.\}\)\n$/],
    ["field.mjs", "export default { task: 'tasks' };", /^pgconverge: .*field\.mjs: unknown field "task" \(known: tasks, services, syncs, commands, flow\)\n$/],
    ["flow.mjs", "export default { flow: { services: { ollama: { rate: 0 } } } };", /^pgconverge: .*flow\.mjs: flow\.services\.ollama\.rate: must be a number > 0 per second, or null for none \(got 0\)\n$/],
    ["clash.mjs", "export default { commands: { worker: { usage: 'x', run: async () => 0 } } };", /^pgconverge: .*clash\.mjs: command "worker" is a pgconverge command; name yours otherwise\n$/],
    ["sync.mjs", "export default { syncs: [{ collection: 'a b', vectors: { size: 3 }, load() {}, page() {} }] };", /^pgconverge: .*sync\.mjs: sync "a b": collection must be/],
  ];
  for (const [name, text, expected] of cases) {
    const file = write(name, text);
    const result = await runCli(["--config", file, "reconcile"], { env: NO_DATABASE, cwd: dir });
    t.equal(result.code, 2, name);
    t.match(result.stderr, expected, name);
    t.equal(result.stderr.split("\n").length, 2, `${name}: one line`);
  }
  const missing = await runCli(["--config", "nope.mjs", "status"], { env: NO_DATABASE, cwd: dir });
  t.equal(missing.code, 2);
  t.equal(missing.stderr, "pgconverge: config file nope.mjs not found\n");
});
