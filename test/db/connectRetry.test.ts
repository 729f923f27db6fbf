// graphile-worker's connections through retryingConnects: a connect refused while Postgres
// restarts waits for it to come back instead of failing. graphile-worker gives up a batch of
// completions at its first error and then shuts its pool down (the worker stops): a restart
// under a worker with a local queue ended the worker (chaos test).
import net from "node:net";
import pg from "pg";
import t from "tap";
import { retryingConnects } from "../../src/db/connectRetry.ts";
import { createTestDatabase } from "../helpers/db.ts";

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Forwards `port` to the database, from when it is started: until then the port refuses connections. */
function forwarder(port: number, target: URL) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    client.pipe(upstream).pipe(client);
  });
  return {
    start: () => new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve)),
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

t.test("a connect refused (the server restarting) is retried until the server is back; the pool itself is unchanged", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const port = await freePort();
  const url = new URL(db.url);
  const proxy = forwarder(port, url);
  t.teardown(() => proxy.stop());
  const through = new URL(db.url);
  through.hostname = "127.0.0.1";
  through.port = String(port);
  const pool = new pg.Pool({ connectionString: through.toString(), max: 2 });
  t.teardown(() => pool.end());
  const retrying = retryingConnects(pool);

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
  await t.rejects(retryingConnects(pool).connect(), { code: "3D000" });
  t.ok(Date.now() - started < 2_000, "not retried");
});
