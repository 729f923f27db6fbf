// graphile-worker's private tables are not its public API. pgconverge reaches them from one
// module (src/runtime/graphileJobs.ts), and this file pins what that module relies on, so that
// an upgrade of graphile-worker that changes them fails here rather than in production.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { createTestDatabase } from "../helpers/db.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DRIVER = "src/runtime/graphileJobs.ts";

/** graphile-worker's schema version the statements were written against (graphile_worker.migrations). */
const GRAPHILE_SCHEMA_VERSION = 20;

/** Every private column the statements of graphile-worker's driver module read or write, with its type. */
const COLUMNS_USED = [
  "_private_job_queues.id integer",
  "_private_job_queues.queue_name text",
  "_private_jobs.attempts smallint",
  "_private_jobs.created_at timestamp with time zone",
  "_private_jobs.id bigint",
  "_private_jobs.job_queue_id integer",
  "_private_jobs.key text",
  "_private_jobs.last_error text",
  "_private_jobs.locked_at timestamp with time zone",
  "_private_jobs.locked_by text",
  "_private_jobs.max_attempts smallint",
  "_private_jobs.payload json",
  "_private_jobs.revision integer",
  "_private_jobs.task_id integer",
  "_private_jobs.updated_at timestamp with time zone",
  "_private_tasks.id integer",
  "_private_tasks.identifier text",
];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : /\.[cm]?[jt]s$/.test(entry.name) ? [join(dir, entry.name)] : [],
  );
}

t.test("only the driver module names graphile-worker's private tables", async (t) => {
  const naming = sources(join(ROOT, "src"))
    .filter((file) => readFileSync(file, "utf8").includes("_private_"))
    .map((file) => relative(ROOT, file));
  t.same(naming, [DRIVER]);
});

t.test("every private column the driver module names is pinned here", async (t) => {
  const text = readFileSync(join(ROOT, DRIVER), "utf8");
  const tables = new Set(COLUMNS_USED.map((column) => column.split(".")[0]!));
  t.same([...new Set(text.match(/_private_[a-z_]+/g))].sort(), [...tables].sort(), "the tables it names");
});

t.test("the installed graphile-worker still has the schema and columns the driver module uses", async (t) => {
  const db = await createTestDatabase(t);
  const [version] = await db.query<{ version: number }>("select max(id)::int as version from graphile_worker.migrations");
  t.equal(
    version!.version,
    GRAPHILE_SCHEMA_VERSION,
    `graphile-worker's schema moved: review ${DRIVER} against its migrations, then update the pins here`,
  );
  const rows = await db.query<{ column: string }>(
    `select table_name || '.' || column_name || ' ' || data_type as column
     from information_schema.columns
     where table_schema = 'graphile_worker' and table_name || '.' || column_name = any($1::text[])
     order by 1`,
    [COLUMNS_USED.map((column) => column.split(" ")[0]!)],
  );
  t.same(rows.map((row) => row.column), [...COLUMNS_USED].sort(), "columns with their types");
});
