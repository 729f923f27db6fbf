// The benchmark harness adapter (bench/harness/main.ts) driven as the harness drives it: two
// replicas paced by `ENQUEUE <n>` lines on stdin, one SIGKILLed and started again, every
// connection of the database terminated once (57P01); then the JSON lines' shape, a clean exit
// on SIGTERM, and every committed job applied exactly once.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import t from "tap";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { TYPESCRIPT_NODE_ARGS } from "../helpers/fixtures.ts";

const ADAPTER = fileURLToPath(new URL("../../bench/harness/main.ts", import.meta.url));
const SAMPLE_EVERY_S = 2;
const METRICS = ["claim_p50_ms", "claim_p95_ms", "claim_p99_ms", "end_to_end_p99_ms", "enqueue_rate", "completion_rate", "queue_depth", "running_depth", "retryable_depth"];
const OBSERVER_ONLY = ["queue_depth", "running_depth", "retryable_depth"];

interface Replica {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  /** The end of its log, for the message of a failed wait. */
  stderr: string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function startReplica(db: TestDatabase, instance: number, env: Record<string, string> = {}): Replica {
  const child = spawn(process.execPath, [...TYPESCRIPT_NODE_ARGS, ADAPTER], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      PRODUCER_MODE: "fixed",
      PRODUCER_PACING: "harness",
      PRODUCER_RATE: "100",
      WORKER_COUNT: "4",
      JOB_PAYLOAD_BYTES: "256",
      JOB_WORK_MS: "1",
      SAMPLE_EVERY_S: String(SAMPLE_EVERY_S),
      BENCH_INSTANCE_ID: String(instance),
      ...env,
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const replica: Replica = { child, lines: [], stderr: "", exited: once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]> };
  let buffered = "";
  child.stdout!.setEncoding("utf8").on("data", (data: string) => {
    buffered += data;
    const complete = buffered.split("\n");
    buffered = complete.pop()!;
    for (const line of complete) replica.lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  child.stderr!.setEncoding("utf8").on("data", (data: string) => (replica.stderr = (replica.stderr + data).slice(-4000)));
  child.stdin!.on("error", () => {}); // a killed replica's stdin
  return replica;
}

const started = (replica: Replica) => waitFor("the replica's descriptor", async () => replica.lines.some((line) => line.kind === "descriptor"), { timeoutMs: 120_000, intervalMs: 100 });

async function send(replica: Replica, tokens: number, size: number): Promise<void> {
  for (let i = 0; i < tokens; i++) {
    if (!replica.child.stdin!.write(`ENQUEUE ${size}\n`)) await once(replica.child.stdin!, "drain");
  }
}

async function enqueued(db: TestDatabase): Promise<number> {
  const [row] = await db.query<{ jobs: number }>("select coalesce(sum(last_seq - first_seq + 1), 0)::int as jobs from bench_harness_batches");
  return row!.jobs;
}

/** Committed sequence numbers not applied, and applied ones that are not committed or applied twice. */
async function ledger(db: TestDatabase) {
  const [row] = await db.query<{ missing: number; unexpected: number; duplicated: number; applied: number; runs: number }>(`
    with expected as (
      select b.run_id, s.seq from bench_harness_batches b cross join generate_series(b.first_seq, b.last_seq) as s (seq)
    ), applied as (
      select run_id, seq, count(*) as times from bench_harness_applied group by run_id, seq
    )
    select (select count(*)::int from expected e where not exists (select 1 from applied a where a.run_id = e.run_id and a.seq = e.seq)) as missing,
           (select count(*)::int from applied a where not exists (select 1 from expected e where e.run_id = a.run_id and e.seq = a.seq)) as unexpected,
           (select count(*)::int from applied where times > 1) as duplicated,
           (select count(*)::int from bench_harness_applied) as applied,
           (select count(distinct run_id)::int from bench_harness_batches) as runs
  `);
  return row!;
}

t.test("replicas paced on stdin, one SIGKILLed and restarted, connections cut: every job applied once", async (t) => {
  const db = await createTestDatabase(t);
  const replicas: Replica[] = [];
  t.teardown(() => replicas.forEach((replica) => replica.child.kill("SIGKILL")));
  const first = startReplica(db, 0);
  const second = startReplica(db, 1);
  replicas.push(first, second);
  await Promise.all([started(first), started(second)]);

  // A burst written at once: the replica reads stdin while its enqueues lag.
  await Promise.all([send(first, 300, 2), send(second, 300, 2)]);
  await waitFor("the second replica to enqueue", async () => (await db.query("select 1 from bench_harness_batches where run_id like '1-%' limit 1")).length > 0, { timeoutMs: 120_000 });
  second.child.kill("SIGKILL");
  await second.exited;
  const restarted = startReplica(db, 1);
  replicas.push(restarted);
  await started(restarted);

  const before = await enqueued(db);
  // Every connection of the database dies at once, as when Postgres restarts a backend (57P01).
  await db.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()");
  await Promise.all([send(first, 50, 4), send(restarted, 50, 4)]);
  await waitFor("enqueues after the connections were cut", async () => (await enqueued(db)) > before, { timeoutMs: 120_000, intervalMs: 200 });

  await waitFor("every committed job applied", async () => (await ledger(db)).missing === 0 || undefined, { timeoutMs: 300_000, intervalMs: 500 });
  // One more sample after the work, so completions are in the lines too.
  const lineCount = first.lines.length;
  await waitFor("a sample after the work", async () => first.lines.length > lineCount + METRICS.length, { timeoutMs: 60_000, intervalMs: 200 }).catch((error: Error) => {
    throw new Error(`${error.message}; exit code ${first.child.exitCode}; its log ends: ${first.stderr}`);
  });

  for (const replica of [first, restarted]) replica.child.kill("SIGTERM");
  const deadline = setTimeout(() => [first, restarted].forEach((replica) => replica.child.kill("SIGKILL")), 5_000);
  const exits = await Promise.all([first.exited, restarted.exited]);
  clearTimeout(deadline);
  t.same(exits, [[0, null], [0, null]], "SIGTERM: exit 0 within 5 s", { stderr: { first: first.stderr, restarted: restarted.stderr } });

  const result = await ledger(db);
  t.match(result, { missing: 0, unexpected: 0, duplicated: 0, runs: 3 }, "exactly once across the three runs (the killed one included)");
  t.ok(result.applied > 600, `jobs applied (${result.applied})`);

  for (const [replica, instance] of [[first, 0], [second, 1], [restarted, 1]] as const) {
    const [descriptor, ...samples] = replica.lines;
    t.match(descriptor, { kind: "descriptor", system: "pgconverge", event_tables: Array, extensions: [], version: /^pgconverge@/, schema_version: String, db_name: db.name, started_at: String });
    t.ok((descriptor!.event_tables as string[]).includes("graphile_worker._private_jobs"));
    for (const sample of samples) {
      t.same(Object.keys(sample).sort(), ["instance_id", "kind", "metric", "subject", "subject_kind", "system", "t", "value", "window_s"], "sample keys");
      t.match(sample, { system: "pgconverge", kind: "adapter", subject_kind: "adapter", subject: "", instance_id: instance });
      t.ok(METRICS.includes(sample.metric as string), `known metric ${String(sample.metric)}`);
      t.ok(typeof sample.value === "number" && Number.isFinite(sample.value) && sample.value >= 0, `${String(sample.metric)} is a number`);
      if (instance !== 0) t.notOk(OBSERVER_ONLY.includes(sample.metric as string), "fleet-wide depths from instance 0 only");
    }
    // Aligned to the wall clock: every line of a tick shares its time, near a SAMPLE_EVERY_S boundary.
    const ticks = new Set(samples.map((sample) => sample.t as string));
    for (const tick of ticks) t.ok(Date.parse(tick) % (SAMPLE_EVERY_S * 1000) < 1000, `tick ${tick} on a ${SAMPLE_EVERY_S} s boundary`);
  }
  const completions = first.lines.filter((line) => line.metric === "completion_rate").map((line) => line.value as number);
  t.ok(Math.max(...completions) > 0, "completion_rate reports the work");
  t.ok(Math.max(...first.lines.filter((line) => line.metric === "claim_p99_ms").map((line) => line.value as number)) > 0, "claim latency is measured");
});

t.test("a bad setting is one line on stderr and exit 2", async (t) => {
  const child = spawn(process.execPath, [...TYPESCRIPT_NODE_ARGS, ADAPTER], {
    env: { ...process.env, DATABASE_URL: "postgres://127.0.0.1:1/none", PRODUCER_MODE: "depth-target" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let stdout = "";
  child.stderr.setEncoding("utf8").on("data", (data: string) => (stderr += data));
  child.stdout.setEncoding("utf8").on("data", (data: string) => (stdout += data));
  const [code] = (await once(child, "exit")) as [number | null];
  t.equal(code, 2);
  t.equal(stderr, 'pgconverge-bench: PRODUCER_MODE: only "fixed" is supported (got "depth-target")\n');
  t.equal(stdout, "", "nothing on stdout, the harness's telemetry");
});
