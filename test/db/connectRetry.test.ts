// graphile-worker's connections through retryingConnects: a connect refused while Postgres
// restarts waits for it to come back instead of failing. graphile-worker gives up a batch of
// completions at its first error and then shuts its pool down (the worker stops): a restart
// under a worker with a local queue ended the worker (chaos test).
import pg from "pg";
import t from "tap";
import { retryingConnects } from "../../src/db/connectRetry.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { forwarder, freePort } from "../helpers/forwarder.ts";

/** A pool on a forwarder to a test database, not started yet: its connects are refused until proxy.start(). */
async function poolOfServerDown(t: { teardown(fn: () => unknown): void }) {
  const db = await createTestDatabase(t, { pipeline: false });
  const proxy = forwarder(await freePort(), db.url);
  t.teardown(() => proxy.stop());
  const pool = new pg.Pool({ connectionString: proxy.url, max: 2 });
  t.teardown(() => pool.end());
  return { proxy, pool };
}

t.test("a connect refused (the server restarting) is retried until the server is back; the pool itself is unchanged", async (t) => {
  const { proxy, pool } = await poolOfServerDown(t);
  const retrying = retryingConnects(pool, new AbortController().signal);

  await t.rejects(pool.connect(), { code: "ECONNREFUSED" }, "the pool as the application holds it fails at once");
  const connecting = retrying.connect();
  await new Promise((resolve) => setTimeout(resolve, 600));
  await proxy.start();
  const client = await connecting;
  t.same((await client.query("select 1 as one")).rows, [{ one: 1 }], "connected once the server was back");
  client.release();
  t.same((await retrying.query("select 2 as two")).rows, [{ two: 2 }], "the rest of the pool's API goes to the pool");
  t.equal(retrying.totalCount, pool.totalCount);
});

t.test("an error that is not a lost connection fails at once", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const url = new URL(db.url);
  url.pathname = "/no_such_database_here";
  const pool = new pg.Pool({ connectionString: url.toString(), max: 1 });
  t.teardown(() => pool.end());
  const started = Date.now();
  await t.rejects(retryingConnects(pool, new AbortController().signal).connect(), { code: "3D000" });
  t.ok(Date.now() - started < 2_000, "not retried");
});

t.test("once the worker stops (its signal aborts), a connect waiting to retry fails with its own error and never connects; a new one still tries once", async (t) => {
  const { proxy, pool } = await poolOfServerDown(t);
  const stopped = new AbortController();
  const retrying = retryingConnects(pool, stopped.signal);
  const connecting = retrying.connect().then(
    (client) => (client.release(), "connected"),
    (error: { code?: string }) => error.code,
  );
  await new Promise((resolve) => setTimeout(resolve, 300));
  stopped.abort();
  await proxy.start();
  t.equal(await connecting, "ECONNREFUSED", "the refused connect's own error, not an abort");
  const client = await retrying.connect();
  t.same((await client.query("select 1 as one")).rows, [{ one: 1 }], "a connect made after the stop still connects, as the pool would");
  client.release();
});
