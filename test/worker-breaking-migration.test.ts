// A breaking migration of graphile-worker's schema (a newer graphile-worker migrated the database)
// stops the worker with exit code 57, as graphile-worker's own CLI does, so that a supervisor
// restarts it with the new code instead of taking the stop for a clean shutdown.
import t from "tap";
import { createTestDatabase, waitFor } from "./helpers/db.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer } from "./helpers/pgbouncer.ts";
import { spawnWorker, waitForRegistration } from "./helpers/worker.ts";

const BREAKING = JSON.stringify({ migrationNumber: 999, breaking: true });

for (const pooled of [false, true]) {
  const mode = pooled ? "through a transaction-mode PgBouncer (the LISTEN on DATABASE_DIRECT_URL)" : "on a session (graphile-worker's own LISTEN)";
  t.test(`${mode}: a breaking migration's notice stops the worker with exit code 57`, { skip: pooled && SKIP_WITHOUT_PGBOUNCER }, async (t) => {
    const db = await createTestDatabase(t);
    const env: Record<string, string> = pooled ? { DATABASE_URL: (await startPgBouncer(t, db.url, { poolSize: 6 })).urlFor(db.url), DATABASE_POOL_MODE: "transaction", DATABASE_DIRECT_URL: db.url } : {};
    const worker = spawnWorker(t, db, env);
    await waitForRegistration(db, worker.child.pid!, 120_000);
    // Its LISTEN may be a moment behind the registration: say it again until the worker goes.
    await waitFor(
      "the worker to exit",
      async () => {
        if (worker.child.exitCode !== null || worker.child.signalCode !== null) return true;
        await db.query("select pg_notify('worker:migrate', $1)", [BREAKING]);
        return false;
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    const { code } = await worker.exited;
    t.equal(code, 57, "exit code 57");
    if (code !== 57) t.comment(worker.output());
    t.same(await db.query("select 1 from workers"), [], "it deregistered on the way out");
  });
}
