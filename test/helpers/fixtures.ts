import { fileURLToPath } from "node:url";
import type { TestDatabase } from "./db.ts";

/** Node's arguments for a TypeScript program a test starts itself (tsx only where Node needs it). */
export const TYPESCRIPT_NODE_ARGS = ["--conditions=pgconverge-source", "--import", fileURLToPath(new URL("../setup/typescript.js", import.meta.url))];

export const FIXTURE_TASKS_DIR = fileURLToPath(new URL("../fixtures/tasks/", import.meta.url));

/**
 * The table fixture tasks write their effects to. Deliberately without a unique key: a
 * job whose effects committed twice shows up as two rows.
 */
export async function createEffectsTable(db: TestDatabase): Promise<void> {
  await db.query(`
    create table test_effects (
      id bigserial primary key,
      job_id bigint not null,
      n integer not null,
      attempt integer not null,
      pid integer not null,
      created_at timestamptz not null default now()
    )
  `);
}

/** Enqueues jobs the way an application would: graphile_worker.add_jobs in one statement. */
export async function addJobs(
  db: TestDatabase,
  task: string,
  payloads: unknown[],
  options: { maxAttempts?: number } = {},
): Promise<void> {
  await db.query(
    `select graphile_worker.add_jobs(array(
       select row($1::text, p, null, null, $3::smallint, null, null, null)::graphile_worker.job_spec
       from unnest($2::json[]) as p
     ))`,
    [task, payloads.map((payload) => JSON.stringify(payload)), options.maxAttempts ?? null],
  );
}

export async function effectCounts(db: TestDatabase): Promise<{ rows: number; distinct: number }> {
  const [row] = await db.query<{ rows: string; distinct: string }>(
    "select count(*) as rows, count(distinct n) as distinct from test_effects",
  );
  return { rows: Number(row!.rows), distinct: Number(row!.distinct) };
}

export async function queuedJobs(db: TestDatabase): Promise<number> {
  const [row] = await db.query<{ count: string }>("select count(*) from graphile_worker.jobs");
  return Number(row!.count);
}

/**
 * Sessions left idle in a transaction: seen idle in the same transaction (pid and xact_start)
 * in two looks a second apart. One look alone also catches a live worker's short transaction
 * between two of its statements (a sweep, a heartbeat), which is not a leak.
 */
export async function idleInTransaction(db: TestDatabase): Promise<number> {
  const look = async () =>
    new Set(
      (
        await db.query<{ session: string }>(
          "select pid || '@' || xact_start as session from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'",
        )
      ).map((row) => row.session),
    );
  const first = await look();
  if (first.size === 0) return 0;
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const second = await look();
  return [...first].filter((session) => second.has(session)).length;
}
