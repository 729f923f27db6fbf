// A command run against a database that is not (or not fully) migrated says to run
// `pgconverge migrate`, in one line, instead of "relation … does not exist".
import t, { type Test } from "tap";
import { migrate, readMigrations } from "../../src/db/migrate.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, testLog } from "../helpers/db.ts";

const COMMANDS = [["status"], ["status", "--json"], ["dlq", "list"], ["outbox", "list"], ["reconcile"], ["search", "anything"], ["ingest", "-"], ["delete", "notes.md"]];

async function expectMigrateAdvice(t: Test, url: string, reason: RegExp): Promise<void> {
  // A couple at a time: each is a Node.js process.
  for (let start = 0; start < COMMANDS.length; start += 4) {
    const batch = COMMANDS.slice(start, start + 4);
    const results = await Promise.all(
      batch.map((args) => runCli(args, { env: { DATABASE_URL: url, QDRANT_URL: "http://127.0.0.1:9", OLLAMA_HOST: "http://127.0.0.1:9" }, input: "some text" })),
    );
    for (const [index, result] of results.entries()) {
      const label = `pgconverge ${batch[index]!.join(" ")}`;
      t.equal(result.code, 2, `${label}: exit 2`);
      t.match(result.stderr, reason, `${label}: ${result.stderr.trim()}`);
      t.equal(result.stderr.trimEnd().split("\n").length, 1, `${label}: one line`);
      t.notMatch(result.stderr, /does not exist/, `${label}: not a missing relation`);
      t.equal(result.stdout, "", `${label}: nothing else`);
    }
  }
}

t.test("on an empty database every command says to run pgconverge migrate", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await expectMigrateAdvice(t, db.url, /^pgconverge: .*migrations not applied \(run pgconverge migrate\)\n$/);
});

t.test("on a database migrated by an older version, commands name the pending migration", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const migrations = readMigrations();
  await migrate(db.pool, testLog, { core: migrations.slice(0, -1), app: PIPELINE_MIGRATIONS });
  const newest = migrations.at(-1)!.name;
  await expectMigrateAdvice(t, db.url, new RegExp(`^pgconverge: .*migrations pending: ${newest} \\(run pgconverge migrate\\)\\n$`));
  const migrated = await runCli(["migrate"], { env: { DATABASE_URL: db.url } });
  t.equal(migrated.code, 0, migrated.stderr);
  const status = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(status.code, 0, `and once migrated, status works: ${status.stderr}`);
});
