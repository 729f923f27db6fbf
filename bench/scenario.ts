// `npm run bench:scenario`: one queue scenario of `npm run bench` on its own, with what the
// server did over its timed window, for profiling it from outside. SCENARIO (applyBatch-tuned):
//   applyBatch-tuned    pgconverge's one-row applyBatch task at the bench's tuned settings
//                       (TUNED_ENV of bench/queue.ts; the numerator of tx_vs_gw_noop_localqueue)
//   apply-tuned         the same with the per-job apply
//   gw-noop-localqueue  graphile-worker's no-op with its local queue (the denominator)
// BENCH_JOBS (20000). Prints, as JSON: the throughput; the event loop's utilisation over the window;
// the window on CLOCK_MONOTONIC (seconds,
// the clock a sampling profiler can be told to stamp with, to cut its samples to the window);
// the pids of the server processes that served the scenario's database in the window; the WAL
// positions at its ends and the database's oid (to decode exactly this window's WAL records of
// this database from the server's WAL); per-job deltas of the database's statistics
// (pg_stat_database) and of the server-wide WAL and writer statistics (pg_stat_wal,
// pg_stat_bgwriter: server-wide, so anything else running on the server is in them too); and
// what the scenario's own clients wrote to the server, per statement: protocol messages and
// bytes, and socket writes (calls into the socket, each one write or writev system call).
import net from "node:net";
import { performance, type EventLoopUtilization } from "node:perf_hooks";
import pg from "pg";
import { envNumber, onCpuNs, round, startServer, type BenchDatabase } from "./lib.ts";
import { graphileThroughput, oneRowBatchTask, oneRowTask, pgconvergeThroughput, TUNED_CONCURRENCY, TUNED_ENV, type ThroughputResult, type WindowObserver } from "./queue.ts";

const SCENARIOS = ["applyBatch-tuned", "apply-tuned", "gw-noop-localqueue"] as const;
type Scenario = (typeof SCENARIOS)[number];
const scenario = (process.env.SCENARIO ?? "applyBatch-tuned") as Scenario;
if (!SCENARIOS.includes(scenario)) throw new Error(`SCENARIO: unknown "${scenario}" (known: ${SCENARIOS.join(", ")})`);
const jobs = envNumber("BENCH_JOBS", 20_000);
/** As bench/run.ts runs these scenarios. */
const PEER_CONCURRENCY = envNumber("BENCH_CONCURRENCY", 10);

// ------------------------------------------------ what the clients write, per statement

interface Written {
  statements: number;
  messages: number;
  bytes: number;
  /** Calls into the socket (net.Socket's _write or _writev) whose first chunk was this statement's. */
  socketWrites: number;
  writevs: number;
}
const written = new Map<string, Written>();
let counting = false;
/** The statement being submitted, while pg writes its messages. */
let submitting: string | null = null;
/** Which statement each message buffer belongs to, for the socket writes that carry it. */
const labels = new WeakMap<object, string>();
/** Sockets of the observer's own client: not counted. */
const uncounted = new WeakSet<object>();

const entry = (label: string) => {
  let row = written.get(label);
  if (!row) written.set(label, (row = { statements: 0, messages: 0, bytes: 0, socketWrites: 0, writevs: 0 }));
  return row;
};
const labelOf = (text: string) => text.replace(/\s+/g, " ").trim().slice(0, 80);

type PgInternals = {
  Query: { prototype: { submit(this: { text?: string }, connection: { stream: object }): unknown } };
  Connection: { prototype: { _send(this: { stream: object }, buffer: Buffer): unknown } };
};
const internals = pg as unknown as PgInternals;
const submit = internals.Query.prototype.submit;
internals.Query.prototype.submit = function (connection) {
  if (!counting || uncounted.has(connection.stream)) return submit.call(this, connection);
  submitting = labelOf(this.text ?? "(named)");
  entry(submitting).statements++;
  try {
    return submit.call(this, connection);
  } finally {
    submitting = null;
  }
};
const send = internals.Connection.prototype._send;
internals.Connection.prototype._send = function (buffer) {
  if (counting && !uncounted.has(this.stream)) {
    const label = submitting ?? "(outside a statement: sync of a portal, startup, termination)";
    const row = entry(label);
    row.messages++;
    row.bytes += buffer.length;
    labels.set(buffer, label);
  }
  return send.call(this, buffer);
};
type SocketInternals = {
  _write(chunk: Buffer, encoding: string, callback: () => void): void;
  _writev(chunks: Array<{ chunk: Buffer }>, callback: () => void): void;
};
const socket = net.Socket.prototype as unknown as SocketInternals;
const socketWrite = socket._write;
socket._write = function (this: net.Socket, chunk, encoding, callback) {
  if (counting && !uncounted.has(this)) entry(labels.get(chunk) ?? "(not a pg message)").socketWrites++;
  return socketWrite.call(this, chunk, encoding, callback);
};
const socketWritev = socket._writev;
socket._writev = function (this: net.Socket, chunks, callback) {
  if (counting && !uncounted.has(this)) {
    const row = entry(labels.get(chunks[0]!.chunk) ?? "(not a pg message)");
    row.socketWrites++;
    row.writevs++;
  }
  return socketWritev.call(this, chunks, callback);
};

// ------------------------------------------------ the server over the window

const monotonicSeconds = () => Number(process.hrtime.bigint()) / 1e9;

interface Snapshot {
  at: number;
  lsn: string;
  database: Record<string, number>;
  wal: Record<string, number>;
  bgwriter: Record<string, number>;
}

const numeric = (row: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(row).flatMap(([key, value]) => (typeof value === "number" || (typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value)) ? [[key, Number(value)]] : [])));

/** Server process ids are this machine's only when the server is: embedded, or at a loopback address. */
let serverOnThisMachine = false;

function observe(): WindowObserver & { report(): Record<string, unknown> } {
  let client: pg.Client | null = null;
  let database: BenchDatabase | null = null;
  let oid = 0;
  let start: Snapshot | null = null;
  let end: Snapshot | null = null;
  let drainedAt = 0;
  /** relfilenode → relation name, to tell the WAL records of each table and index apart. */
  let relations: Record<string, string> = {};
  /** Server process id → application_name of its client and the statements it was seen running. */
  const pids = new Map<number, { application: string; statements: Set<string> }>();
  /** Each server process's time on a CPU: when first seen, and when last seen (up to the drain). */
  const serverCpu = new Map<number, { first: number; last: number }>();
  let nodeCpuStart: NodeJS.CpuUsage | null = null;
  let nodeCpu: NodeJS.CpuUsage | null = null;
  let eventLoopStart: EventLoopUtilization | null = null;
  let eventLoop: EventLoopUtilization | null = null;
  let sampling: Promise<void> | null = null;
  let stopSampling = false;

  const snapshot = async (): Promise<Snapshot> => {
    const at = monotonicSeconds();
    const { rows } = await client!.query<{ lsn: string; database: Record<string, unknown>; wal: Record<string, unknown>; bgwriter: Record<string, unknown> }>(
      `select pg_current_wal_lsn()::text as lsn,
              (select to_jsonb(d) from pg_stat_database d where datid = $1) as database,
              (select to_jsonb(w) from pg_stat_wal w) as wal,
              (select to_jsonb(b) from pg_stat_bgwriter b) as bgwriter`,
      [oid],
    );
    const row = rows[0]!;
    return { at, lsn: row.lsn, database: numeric(row.database), wal: numeric(row.wal), bgwriter: numeric(row.bgwriter) };
  };
  const samplePids = async () => {
    const { rows } = await client!.query<{ pid: number; application: string; query: string }>(
      "select pid, application_name as application, query from pg_stat_activity where datid = $1 and pid <> pg_backend_pid()",
      [oid],
    );
    for (const row of rows) {
      const seen = pids.get(row.pid) ?? { application: row.application || "(none)", statements: new Set<string>() };
      if (row.query) seen.statements.add(row.query.replace(/\s+/g, " ").trim().slice(0, 48));
      pids.set(row.pid, seen);
    }
    for (const pid of pids.keys()) {
      const ns = onCpuNs(pid);
      if (ns === null) continue;
      const cpu = serverCpu.get(pid);
      if (cpu) cpu.last = ns;
      // A process first seen in the window started in it: all its time is the scenario's.
      else serverCpu.set(pid, { first: 0, last: ns });
    }
  };

  return {
    async started(db) {
      database = db;
      client = new pg.Client({ connectionString: db.url, application_name: "bench-scenario-observer" });
      // Dropping the database ends this session if the scenario fails before `finished`.
      client.on("error", () => {});
      await client.connect();
      uncounted.add((client as unknown as { connection: { stream: object } }).connection.stream);
      oid = (await client.query<{ oid: number }>("select oid::int from pg_database where datname = current_database()")).rows[0]!.oid;
      // Statistics are read from a snapshot taken once per transaction: outside one, each read is fresh.
      start = await snapshot();
      const named = await client.query<{ node: string; name: string }>(
        "select pg_relation_filenode(c.oid)::text as node, n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'i', 'S', 't') and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')",
      );
      relations = Object.fromEntries(named.rows.map((row) => [row.node, row.name]));
      await samplePids();
      // Processes already there when the window opens: only their time after this counts.
      for (const cpu of serverCpu.values()) cpu.first = cpu.last;
      nodeCpuStart = process.cpuUsage();
      eventLoopStart = performance.eventLoopUtilization();
      counting = true;
      sampling = (async () => {
        while (!stopSampling) {
          await new Promise((resolve) => setTimeout(resolve, 200));
          await samplePids();
        }
      })().catch(() => {});
    },
    async finished() {
      drainedAt = monotonicSeconds();
      nodeCpu = process.cpuUsage(nodeCpuStart!);
      eventLoop = performance.eventLoopUtilization(eventLoopStart!);
      counting = false;
      stopSampling = true;
      await sampling;
      await samplePids();
      // A backend flushes its statistics at most once a second, and an idle one only after 10 s.
      await new Promise((resolve) => setTimeout(resolve, 11_000));
      end = await snapshot();
      await client!.end();
    },
    report() {
      const delta = (key: "database" | "wal" | "bgwriter", names: string[]) =>
        Object.fromEntries(names.flatMap((name) => (name in end![key] ? [[name, end![key][name]! - start![key][name]!]] : [])));
      const perJob = (values: Record<string, number>) => Object.fromEntries(Object.entries(values).map(([name, value]) => [name, round(value / jobs, 3)]));
      const db = delta("database", ["xact_commit", "xact_rollback", "blks_read", "blks_hit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "temp_bytes"]);
      const wal = delta("wal", ["wal_records", "wal_fpi", "wal_bytes", "wal_buffers_full", "wal_write", "wal_sync"]);
      const bgwriter = delta("bgwriter", ["checkpoints_timed", "checkpoints_req", "buffers_checkpoint", "buffers_clean", "buffers_backend", "buffers_backend_fsync", "buffers_alloc"]);
      const total = [...written.values()].reduce((sum, row) => ({ bytes: sum.bytes + row.bytes, socketWrites: sum.socketWrites + row.socketWrites }), { bytes: 0, socketWrites: 0 });
      return {
        window: { monotonicStart: round(start!.at, 6), monotonicDrained: round(drainedAt, 6), monotonicEnd: round(end!.at, 6), note: "the statistics are read at the end, 11 s after the queue drained (an idle backend flushes them after 10 s)" },
        clientPid: process.pid,
        database: { name: database!.name, oid, walStart: start!.lsn, walEnd: end!.lsn, relations },
        serverPids: [...pids.keys()].sort((a, b) => a - b),
        serverProcesses: Object.fromEntries(
          [...pids].sort((a, b) => a[0] - b[0]).map(([pid, seen]) => [pid, { application: seen.application, statements: [...seen.statements].slice(0, 6) }]),
        ),
        cpuPerJobUs: {
          note: "time on a CPU from the window's start to the drain: Node.js (all threads, user + system) and the server processes that served the database (from /proc; null unless the server is on this machine; a process that ended before its last sample loses up to 200 ms, and the last sample is taken just after the drain)",
          node: round((nodeCpu!.user + nodeCpu!.system) / jobs, 1),
          nodeSystem: round(nodeCpu!.system / jobs, 1),
          postgres: serverOnThisMachine && serverCpu.size ? round([...serverCpu.values()].reduce((sum, cpu) => sum + cpu.last - cpu.first, 0) / 1000 / jobs, 1) : null,
        },
        // The share of the window Node.js's main thread was busy (a socket write it waits in
        // while the server process it woke takes the CPU counts as busy): near 1, it is the bound.
        eventLoopUtilization: round(eventLoop!.utilization, 3),
        databasePerJob: perJob(db),
        serverWideWal: { ...wal, perJob: perJob(wal) },
        serverWideBgwriter: bgwriter,
        clientWrites: {
          bytesPerJob: round(total.bytes / jobs, 1),
          socketWritesPerJob: round(total.socketWrites / jobs, 3),
          byStatement: [...written]
            .sort((a, b) => b[1].bytes - a[1].bytes)
            .map(([statement, row]) => ({
              statement,
              perJob: { statements: round(row.statements / jobs, 4), bytes: round(row.bytes / jobs, 1), socketWrites: round(row.socketWrites / jobs, 4) },
              bytesPerStatement: row.statements ? Math.round(row.bytes / row.statements) : null,
              writevs: row.writevs,
            })),
        },
      };
    },
  };
}

const server = await startServer();
try {
  serverOnThisMachine = server.embedded || ["localhost", "127.0.0.1", "[::1]"].includes(new URL(server.adminUrl).hostname);
  const observer = observe();
  let result: ThroughputResult;
  if (scenario === "gw-noop-localqueue") result = await graphileThroughput(server, "noop-localqueue", { jobs, concurrency: PEER_CONCURRENCY }, observer);
  else result = await pgconvergeThroughput(server, { jobs, concurrency: TUNED_CONCURRENCY }, TUNED_ENV, scenario === "apply-tuned" ? oneRowTask : oneRowBatchTask, observer);
  console.log(JSON.stringify({ scenario, result, ...observer.report() }, null, 2));
} finally {
  await server.stop();
}
