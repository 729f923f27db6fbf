// `npm run bench:held`: a session idles in a transaction holding an XID while jobs flow at a
// steady rate. VACUUM cannot remove a row version deleted after that XID began, so the queue's
// and the outbox's dead rows pile up until it ends. Reported every 10 s, before, during and
// after: enqueue-to-start latency p50/p99 (a pgconverge Worker at the shipped defaults, each job
// writing one chunk and its outbox change, one relay sending them to the Qdrant test server),
// jobs and outbox changes still pending, and dead tuples of the queue, ledger, outbox and chunk
// tables. Writes bench/results/held.json.
// HELD_RATE (200 jobs/s)  HELD_BEFORE_SECONDS (30)  HELD_SECONDS (120)  HELD_AFTER_SECONDS (30)
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { sql } from "slonik";
import { z } from "zod";
import { defineTask } from "pgconverge";
import { migrate } from "../src/db/migrate.ts";
import { createLogger } from "../src/log.ts";
import { enqueuePointChanges } from "../src/outbox/outbox.ts";
import { createQdrantClient } from "../src/outbox/qdrant.ts";
import { Relay } from "../src/outbox/relay.ts";
import { chunkSync } from "../pipeline/chunkSync.ts";
import { PIPELINE_MIGRATIONS } from "../test/helpers/db.ts";
import { FakeQdrant } from "../test/servers/qdrant.ts";
import { benchPool, createDatabase, describeMachine, envNumber, percentile, round, sleep, startServer } from "./lib.ts";
import { createPgconverge, PGC_TASK, type PgconvergeBench } from "./queue.ts";

const rate = envNumber("HELD_RATE", 200);
const phases = [
  { phase: "before", seconds: envNumber("HELD_BEFORE_SECONDS", 30) },
  { phase: "held", seconds: envNumber("HELD_SECONDS", 120) },
  { phase: "after", seconds: envNumber("HELD_AFTER_SECONDS", 30) },
] as const;
const WINDOW_SECONDS = 10;
const COLLECTION = "held";
const DIMENSIONS = 8;
const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));
const log = createLogger("silent");
const now = () => performance.timeOrigin + performance.now();

/** Tables whose dead tuples are reported (the queue's, the ledger's, the outbox's). */
const TABLES = ["graphile_worker._private_jobs", "public.job_ledger", "public.outbox", "public.chunks"];

const server = await startServer();
const database = await createDatabase(server, "held");
const monitor = benchPool(database.url, 2);
const fake = new FakeQdrant();
let bench: PgconvergeBench | null = null;
let relay: Relay | null = null;
let holder: pg.Client | null = null;
try {
  const machine = await describeMachine(server);
  // Start = the task's prepare; apply writes one chunk and its outbox change.
  const starts: number[] = [];
  const task = defineTask({
    payload: z.object({ enqueuedAt: z.number(), document: z.string() }),
    async prepare({ payload }) {
      starts.push(now() - payload.enqueuedAt);
      return undefined;
    },
    async apply({ tx, job, payload }) {
      const [id] = await tx.any(sql.type(z.object({ id: z.string() }))`
        insert into chunks (id, document_id, chunk_index, content, content_sha256, embedding, embedding_model, embedded_at)
        values (gen_random_uuid(), ${payload.document}, ${Number(job.id)}, 'held', repeat('a', 64),
                array(select random()::real from generate_series(1, ${DIMENSIONS})), 'bench', now())
        returning id
      `);
      await enqueuePointChanges(tx, COLLECTION, [id!.id]);
    },
  });
  bench = await createPgconverge(database, undefined, task);
  await migrate(bench.queuePool, log, { app: PIPELINE_MIGRATIONS });
  const [{ id: document }] = (await monitor.query("insert into documents (source, content, content_sha256) values ('held', 'held', repeat('0', 64)) returning id")).rows as [{ id: string }];
  await fake.start();
  relay = new Relay({
    pool: bench.appPool,
    listenUrl: database.url,
    qdrant: await createQdrantClient({ url: fake.url, timeoutMs: 10_000 }),
    syncs: [chunkSync({ collection: COLLECTION, dimensions: DIMENSIONS })],
    log,
    batchSize: 128,
    pollIntervalMs: 5_000,
    leaseMs: 60_000,
    maxBackoffMs: 1_000,
  });
  await relay.prepareCollections();
  await bench.worker.start();
  await relay.start();
  await sleep(500);

  const deadTuples = async () => {
    const { rows } = await monitor.query<{ name: string; dead: string; live: string }>(
      `select schemaname || '.' || relname as name, n_dead_tup as dead, n_live_tup as live from pg_stat_all_tables
       where schemaname || '.' || relname = any($1)`,
      [TABLES],
    );
    return Object.fromEntries(rows.map((row) => [row.name, Number(row.dead)]));
  };
  const seen = new Set<string>();
  const windows: Array<Record<string, unknown>> = [];
  let xid: string | null = null;
  for (const { phase, seconds } of phases) {
    if (phase === "held") {
      holder = new pg.Client({ connectionString: database.url, application_name: "held-transaction" });
      holder.on("error", () => {});
      await holder.connect();
      await holder.query("begin");
      xid = String((await holder.query("select pg_current_xact_id() as xid")).rows[0].xid);
    }
    if (phase === "after" && holder) {
      await holder.query("rollback");
      await holder.end();
      holder = null;
    }
    for (let window = 0; window < seconds / WINDOW_SECONDS; window++) {
      const firstStart = starts.length;
      const started = performance.now();
      // Paced by the clock: each 10 ms tick adds the jobs due by now, so a slow insert (a busy
      // machine) is caught up on the next tick instead of lowering the rate.
      let enqueued = 0;
      for (let elapsed = 0; elapsed < WINDOW_SECONDS * 1000; elapsed = performance.now() - started) {
        const due = Math.floor((elapsed / 1000) * rate) - enqueued;
        if (due > 0) {
          await monitor.query(
            `select count(*) from graphile_worker.add_jobs(array(
               select row($1::text, json_build_object('enqueuedAt', $2::float8, 'document', $3::text), null, null, null, null, null, null)::graphile_worker.job_spec
               from generate_series(1, $4::int)))`,
            [PGC_TASK, now(), document, due],
          );
          enqueued += due;
        }
        await sleep(10);
      }
      const elapsed = (performance.now() - started) / 1000;
      const latencies = starts.slice(firstStart).sort((a, b) => a - b);
      const visible = fake.points(COLLECTION).filter((point) => !seen.has(String(point.id)));
      for (const point of visible) seen.add(String(point.id));
      const queued = Number((await monitor.query("select count(*) from graphile_worker._private_jobs")).rows[0].count);
      const outboxPending = Number((await monitor.query("select count(*) from outbox")).rows[0].count);
      const row = {
        phase,
        endSecond: round((windows.length + 1) * WINDOW_SECONDS),
        enqueuedPerSecond: round(enqueued / elapsed),
        started: latencies.length,
        startP50Ms: round(percentile(latencies, 50), 1),
        startP99Ms: round(percentile(latencies, 99), 1),
        pointsVisible: visible.length,
        queued,
        outboxPending,
        deadTuples: await deadTuples(),
      };
      windows.push(row);
      process.stderr.write(`bench:held ${JSON.stringify(row)}\n`);
    }
  }
  const result = {
    command: "npm run bench:held",
    at: new Date().toISOString(),
    machine,
    rate,
    heldXid: xid,
    windowSeconds: WINDOW_SECONDS,
    settings: "pgconverge Worker at the shipped defaults; task: prepare records enqueue-to-start, apply inserts one chunk (8-d) and its outbox change; one relay into the Qdrant test server",
    windows,
  };
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(`${RESULTS}held.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log("phase  end_s  started  start_p50_ms  start_p99_ms  queued  outbox_pending  dead: " + TABLES.join(" "));
  for (const w of windows as any[]) {
    console.log(`${w.phase.padEnd(6)} ${String(w.endSecond).padStart(5)}  ${String(w.started).padStart(7)}  ${String(w.startP50Ms).padStart(12)}  ${String(w.startP99Ms).padStart(12)}  ${String(w.queued).padStart(6)}  ${String(w.outboxPending).padStart(14)}  ${TABLES.map((name) => w.deadTuples[name] ?? 0).join(" ")}`);
  }
  console.log("wrote bench/results/held.json");
} finally {
  await holder?.end().catch(() => {});
  await relay?.stop().catch(() => {});
  await bench?.stop().catch(() => {});
  await fake.stop().catch(() => {});
  await monitor.end();
  await database.drop();
  await server.stop();
}
