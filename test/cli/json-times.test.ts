// Every time in every --json output is printed one way: ISO 8601 with a Z (or an offset).
import { randomUUID } from "node:crypto";
import t from "tap";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { pipelineEnv, startServers } from "../helpers/pipeline.ts";

const ISO_8601 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
/** Anything that looks like a date, however it is written. */
const DATE_LIKE = /\d{4}-\d\d-\d\d/;

/** [path, value] of every string that is a time: a key ending in At, or a value with a date in it. */
function times(value: unknown, path = "$"): Array<[string, string]> {
  if (Array.isArray(value)) return value.flatMap((item, index) => times(item, `${path}[${index}]`));
  if (value && typeof value === "object") return Object.entries(value).flatMap(([key, item]) => times(item, `${path}.${key}`));
  if (typeof value === "string" && (/At$/.test(path) || DATE_LIKE.test(value))) return [[path, value]];
  return [];
}

t.test("status, reconcile, dlq list and outbox list --json print ISO 8601 times", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const env = pipelineEnv(db, servers);
  await db.query(`
    insert into workers (id, hostname, pid, concurrency) values ('w-1-aa', 'h', 1, 4);
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
      values (101, 0, 'effect', '{}', 'permanent', 1, 25, 'PermanentError: no', now(), now());
    insert into outbox (collection, point_id, state, last_error, dead_at) values ('chunks', '${randomUUID()}', 'dead', 'Bad Request', now());
  `);
  const found = new Set<string>();
  for (const args of [["reconcile", "--json"], ["status", "--json"], ["dlq", "list", "--json"], ["outbox", "list", "--json"]]) {
    const result = await runCli(args, { env });
    t.equal(result.code, 0, `pgconverge ${args.join(" ")}: ${result.stderr}`);
    for (const [path, value] of times(JSON.parse(result.stdout))) {
      t.match(value, ISO_8601, `${args[0]} ${path} = ${value}`);
      found.add(`${args[0]} ${path.replace(/\[\d+\]/g, "[]").replace(/byCollection\.\w+/, "byCollection.*")}`);
    }
  }
  for (const field of ["reconcile $.startedAt", "status $.workers.list[].heartbeatAt", "status $.reconcile.byCollection.*.finishedAt", "dlq $[].deadAt"]) {
    t.ok(found.has(field), `${field} was checked`);
  }
});
