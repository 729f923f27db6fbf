// The chaos run: the reference pipeline under everything at once (faults in Qdrant and Ollama,
// workers SIGKILLed and respawned, documents added, edited and deleted through the CLI while
// they are processed, one Postgres restart), then a drain and a check of every invariant.
import type pg from "pg";
import { migrate } from "../../src/db/migrate.ts";
import { createLogger } from "../../src/log.ts";
import { pipelineEnv, startServers } from "../../test/helpers/pipeline.ts";
import type { Fault } from "../../test/servers/faults.ts";
import { benchPool, round, sleep } from "../lib.ts";
import { ChaosDocuments } from "./documents.ts";
import { WorkerFleet, type SelfExit } from "./fleet.ts";
import { checkInvariants, outstandingWork, qdrantMatches, type Check } from "./invariants.ts";
import { RestartablePostgres } from "./postgres.ts";

export interface ChaosOptions {
  /** Length of the chaos phase; the drain comes after. */
  seconds: number;
  documents: number;
  workers: number;
  /** Ingest waves, spread over the first three quarters of the chaos phase. */
  waves: number;
  /** Mean time between SIGKILLs. */
  killEveryMs: number;
  /** Share of requests that get a fault. */
  qdrantFaultRate: number;
  ollamaFaultRate: number;
  /** Give up waiting for the drain after this long (the checks then say what is left). */
  drainTimeoutMs: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface ChaosResult {
  ok: boolean;
  summary: string;
  checks: Check[];
  figures: {
    elapsedSeconds: number;
    chaosSeconds: number;
    drainSeconds: number | null;
    workers: number;
    kills: number;
    spawned: number;
    selfExits: number;
    restart: { atSeconds: number; downMs: number; inFlight: { lockedJobs: number; jobs: number; outbox: number } } | null;
    faults: { qdrant: number; ollama: number };
    documents: { live: number; added: number; edited: number; deleted: number; resurrected: number };
    chunks: number;
    embedCalls: number;
    cliRetries: number;
    /** Sweeper releases of workers believed dead, and live workers that found they had been. */
    sweeperReleases: number;
    declaredDeadWhileAlive: number;
  };
  /** Warnings and errors the workers logged, by message, most frequent first. */
  workerMessages: Record<string, number>;
  /** Worker processes that exited without being killed: a finding, with their last output. */
  selfExits: SelfExit[];
}

const TRANSIENT_FAULTS = (timeoutDelayMs: number): Fault[] => [
  { kind: "status", status: 503, message: "server busy" },
  { kind: "status", status: 503, message: "server busy" },
  { kind: "reset" },
  { kind: "reset" },
  { kind: "status", status: 429, retryAfterSeconds: 1 },
  { kind: "delay", ms: 300 },
  { kind: "delay", ms: 300 },
  // Longer than the client's timeout (2 s): a timeout, which is transient too.
  { kind: "delay", ms: timeoutDelayMs },
];

async function jobsInFlight(pool: pg.Pool): Promise<{ lockedJobs: number; jobs: number; outbox: number }> {
  const { rows } = await pool.query<{ lockedJobs: number; jobs: number; outbox: number }>(`
    select (select count(*)::int from graphile_worker._private_jobs where locked_at is not null) as "lockedJobs",
           (select count(*)::int from graphile_worker._private_jobs) as jobs,
           (select count(*)::int from outbox where state = 'pending') as outbox`);
  return rows[0]!;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  const say = (line: string) => options.log?.(`[${elapsed().toFixed(1).padStart(6)}s] ${line}`);
  const teardowns: Array<() => Promise<unknown>> = [];
  const postgres = new RestartablePostgres();
  await postgres.start();
  teardowns.push(() => postgres.stop());
  try {
    const pool = benchPool(postgres.url, 4);
    teardowns.unshift(() => pool.end());
    await migrate(pool, createLogger("silent"));
    const servers = await startServers({ teardown: (fn) => void teardowns.unshift(async () => fn()) });
    const env = {
      ...pipelineEnv({ url: postgres.url }, servers),
      WORKER_CONCURRENCY: "4",
      SHUTDOWN_TIMEOUT_MS: "2000",
    };
    const documents = new ChaosDocuments(options.documents, env, (args, stderr) =>
      say(`pgconverge ${args[0]} failed; retrying in 1 s (as a user would): ${stderr.split("\n").slice(-2).join(" / ")}`));
    teardowns.unshift(async () => documents.remove());
    const fleet = new WorkerFleet(options.workers, env);
    teardowns.unshift(() => fleet.stop());

    servers.qdrant.faults.setRandom({ rate: options.qdrantFaultRate, faults: TRANSIENT_FAULTS(2_500) });
    servers.ollama.faults.setRandom({ rate: options.ollamaFaultRate, faults: TRANSIENT_FAULTS(2_500) });
    fleet.start();
    say(`${options.workers} workers, Postgres at ${postgres.url}, faults on (Qdrant ${options.qdrantFaultRate}, Ollama ${options.ollamaFaultRate})`);

    // The chaos phase's clock starts now, not with the set-up above: on a loaded machine the
    // set-up has taken 9 s of a 20 s run, the restart then came at its end and no worker was killed.
    const chaosStarted = Date.now();
    const chaosEnds = chaosStarted + options.seconds * 1000;
    const restartAt = chaosStarted + options.seconds * 500;
    // Assigned in an action below; `as` keeps TypeScript from narrowing it to null for good.
    let restart = null as ChaosResult["figures"]["restart"];
    // No kills around the restart: a worker respawned while the server is down fails to
    // connect at start-up and would blur what the restart itself does to running workers.
    let restartedAt: number | null = null;
    const killsPaused = () => Date.now() > restartAt - 2_000 && (restartedAt === null || Date.now() - restartedAt < 3_000);
    const killer = (async () => {
      while (Date.now() < chaosEnds) {
        const delayMs = options.killEveryMs * (0.5 + Math.random());
        // The first kill lands before the pause around the restart: on a slow machine the pause
        // can last to the end of a short run, which would then have no kill at all.
        await sleep(fleet.kills === 0 ? Math.min(delayMs, Math.max(0, restartAt - 3_000 - Date.now())) : delayMs);
        if (Date.now() >= chaosEnds || killsPaused()) continue;
        const pid = fleet.killRandom();
        if (pid !== null) say(`SIGKILL worker ${pid}`);
      }
    })();

    // The restart, at half time, once jobs are in flight (claimed, locked): it runs alongside
    // the waves, so an ingest may be cut off too (the CLI command is then retried).
    const restarter = (async () => {
      await sleep(restartAt - Date.now());
      let inFlight = { lockedJobs: 0, jobs: 0, outbox: 0 };
      const waitUntil = Date.now() + 10_000;
      while (Date.now() < waitUntil) {
        inFlight = await jobsInFlight(pool);
        if (inFlight.lockedJobs > 0) break;
        await sleep(50);
      }
      say(`Postgres: fast shutdown and restart on the same port and data directory, with ${inFlight.lockedJobs} jobs running, ${inFlight.jobs} queued, ${inFlight.outbox} outbox rows pending`);
      const atSeconds = round(elapsed(), 1);
      const { downMs } = await postgres.restart();
      restart = { atSeconds, downMs, inFlight };
      restartedAt = Date.now();
      say(`Postgres back after ${downMs} ms`);
    })();

    // The waves, spread over the first three quarters of the chaos phase.
    const waveEvery = (options.seconds * 750) / options.waves;
    const perWave = Math.ceil(options.documents / options.waves);
    for (let i = 0; i < options.waves; i++) {
      await sleep(chaosStarted + i * waveEvery - Date.now());
      const report = await documents.wave(perWave);
      say(`wave ${i + 1}/${options.waves}: +${report.added} documents, ${report.edited} edited, ${report.deleted} deleted, ${report.resurrected} re-created`);
    }
    await restarter;
    await sleep(chaosEnds - Date.now());
    await killer;

    // Drain: no more faults or kills; the fleet back at full size finishes the work.
    servers.qdrant.faults.clear();
    servers.ollama.faults.clear();
    const chaosSeconds = elapsed();
    say(`chaos over (${fleet.kills} kills, faults: Qdrant ${servers.qdrant.faults.injected}, Ollama ${servers.ollama.faults.injected}); draining`);
    const drainStarted = Date.now();
    let drainSeconds: number | null = null;
    while (Date.now() - drainStarted < options.drainTimeoutMs) {
      const left = await outstandingWork(pool).catch(() => -1);
      if (left === 0) {
        const drift = await qdrantMatches(pool, servers.qdrant);
        if (drift.missing + drift.extra + drift.stale === 0) {
          drainSeconds = round((Date.now() - drainStarted) / 1000, 1);
          break;
        }
      }
      await sleep(250);
    }
    say(drainSeconds === null ? `not drained after ${options.drainTimeoutMs / 1000} s` : `drained in ${drainSeconds} s`);

    // Checked while the workers still run: idle-in-transaction sessions would be theirs.
    const { checks, counts } = await checkInvariants(pool, servers.qdrant, documents.live);
    if (fleet.selfExits.length > 0) {
      for (const exit of fleet.selfExits) say(`worker ${exit.pid} exited by itself at ${exit.atSeconds}s (code ${exit.code}, signal ${exit.signal}):\n${exit.output.trim()}`);
    }
    const figures: ChaosResult["figures"] = {
      elapsedSeconds: round(elapsed(), 1),
      chaosSeconds: round(chaosSeconds, 1),
      drainSeconds,
      workers: options.workers,
      kills: fleet.kills,
      spawned: fleet.spawned,
      selfExits: fleet.selfExits.length,
      restart,
      faults: { qdrant: servers.qdrant.faults.injected, ollama: servers.ollama.faults.injected },
      documents: { live: counts.documents, ...documents.totals },
      chunks: counts.chunks,
      embedCalls: servers.ollama.embedCalls,
      cliRetries: documents.cliRetries,
      sweeperReleases: fleet.watched.released,
      declaredDeadWhileAlive: fleet.watched.declaredDeadWhileAlive,
    };
    const failed = checks.filter((check) => !check.ok);
    const ok = failed.length === 0 && drainSeconds !== null;
    const restartText = restart === null ? "no restart" : `Postgres restart at ${restart.atSeconds}s (down ${restart.downMs} ms)`;
    const summary =
      `chaos ${ok ? "PASS" : "FAIL"}: ${checks.length - failed.length}/${checks.length} invariants hold` +
      (failed.length > 0 ? ` (failed: ${failed.map((check) => `${check.name}: ${check.detail}`).join("; ")})` : "") +
      ` | ${figures.chaosSeconds}s chaos + ${drainSeconds ?? "timeout"}s drain, ${figures.elapsedSeconds}s total` +
      ` | ${figures.documents.live} documents (${figures.documents.added} added, ${figures.documents.edited} edited, ${figures.documents.deleted} deleted, ${figures.documents.resurrected} re-created), ${figures.chunks} chunks` +
      ` | ${options.workers} workers: ${figures.kills} SIGKILLs, ${figures.selfExits} exited by themselves` +
      ` | ${restartText}` +
      ` | faults injected: Qdrant ${figures.faults.qdrant}, Ollama ${figures.faults.ollama}`;
    const workerMessages = Object.fromEntries([...fleet.messages].sort((a, b) => b[1] - a[1]));
    return { ok, summary, checks, figures, workerMessages, selfExits: fleet.selfExits };
  } finally {
    for (const teardown of teardowns) await teardown().catch(() => {});
  }
}
