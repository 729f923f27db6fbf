import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import pg from "pg";
import { sql, type CommonQueryMethods, type DatabasePool } from "slonik";
import { z } from "zod";
import type { Logger } from "../log.ts";
import { classifyError, describeError } from "../runtime/errors.ts";
import { acknowledge, claimChanges, markDead, scheduleRetry, type ClaimedChange } from "./outbox.ts";
import type { PointState } from "./chunkPoints.ts";
import { ConfigError } from "../config.ts";
import { describeQdrantError, ensureCollection, retryAfterMs, statusOf, type QdrantClient } from "./qdrant.ts";

export const OUTBOX_CHANNEL = "pgconverge_outbox";

export interface RelayConfig {
  pool: DatabasePool;
  /** Connection string for the LISTEN connection (held by the relay for its lifetime). */
  databaseUrl: string;
  qdrant: QdrantClient;
  collection: string;
  /** Vector size of the collection; a point of another size is dead without a request. */
  dimensions: number;
  /** Reads the current state of points from Postgres. */
  loadPoints: (db: CommonQueryMethods, ids: readonly string[]) => Promise<Map<string, PointState>>;
  log: Logger;
  /** Changes per Qdrant request. */
  batchSize: number;
  /** Fallback poll when no notification arrives, ms. */
  pollIntervalMs: number;
  /** How long a claimed change stays this relay's; must exceed the Qdrant request deadline. */
  leaseMs: number;
  /** Backoff after transient failures: from 500 ms doubling to this cap, with jitter. */
  maxBackoffMs: number;
}

export interface BatchReport {
  claimed: number;
  synced: number;
  retried: number;
  dead: number;
  durationMs: number;
}

const BASE_BACKOFF_MS = 500;

/** Exponential backoff with "equal jitter": half the step fixed, half random. */
export function backoffMs(attempts: number, maxBackoffMs: number): number {
  const step = Math.min(maxBackoffMs, BASE_BACKOFF_MS * 2 ** Math.min(attempts, 30));
  return step / 2 + Math.random() * (step / 2);
}

/**
 * Drains the outbox into Qdrant. Woken by LISTEN/NOTIFY when changes commit, with a slow
 * poll as a fallback; claims batches under a lease (SKIP LOCKED), reads the current state of
 * each key from Postgres and upserts or deletes accordingly, so processing order cannot make
 * Qdrant diverge; acknowledges a row only if its version did not move meanwhile. No
 * transaction is open during a Qdrant request. Any number of relays may run.
 */
export class Relay extends EventEmitter<{ batch: [BatchReport]; idle: [] }> {
  readonly id = `relay-${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private running = false;
  private loop: Promise<void> | null = null;
  private listener: pg.Client | null = null;
  private wake: (() => void) | null = null;
  private woken = false;
  private unreachableSince: number | null = null;
  /** Whether the collection is known to exist with the right vector size. */
  private collectionReady = false;

  constructor(private readonly config: RelayConfig) {
    super();
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.listen();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.nudge();
    await this.loop;
    const listener = this.listener;
    this.listener = null;
    await listener?.end().catch(() => {});
  }

  /** Wakes the loop now (used on notifications). */
  nudge(): void {
    this.woken = true;
    this.wake?.();
  }

  /**
   * Creates the collection if missing. Throws ConfigError if it exists with another vector
   * size; a transient failure leaves the relay waiting (changes stay pending, nothing dies).
   */
  async prepareCollection(): Promise<boolean> {
    if (this.collectionReady) return true;
    try {
      const outcome = await ensureCollection(this.config.qdrant, { name: this.config.collection, size: this.config.dimensions, distance: "Cosine" });
      if (outcome === "created") this.config.log.info({ collection: this.config.collection, size: this.config.dimensions }, "Qdrant collection created");
      this.collectionReady = true;
      this.reachable();
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      this.unreachable(describeQdrantError(error));
    }
    return this.collectionReady;
  }

  /** Claims and syncs one batch. */
  async syncBatch(): Promise<BatchReport> {
    const { pool, collection, batchSize, leaseMs } = this.config;
    const started = performance.now();
    if (!(await this.prepareCollection())) return { claimed: 0, synced: 0, retried: 0, dead: 0, durationMs: 0 };
    const claimed = await claimChanges(pool, this.id, collection, batchSize, leaseMs);
    const report: BatchReport = { claimed: claimed.length, synced: 0, retried: 0, dead: 0, durationMs: 0 };
    if (claimed.length > 0) {
      const points = await this.config.loadPoints(pool, claimed.map((change) => change.point_id));
      const upserts: ClaimedChange[] = [];
      const deletes: ClaimedChange[] = [];
      for (const change of claimed) {
        const point = points.get(change.point_id);
        if (!point) deletes.push(change);
        else if (point.vector.length !== this.config.dimensions) {
          await markDead(pool, this.id, change, `vector has ${point.vector.length} dimensions; collection "${collection}" expects ${this.config.dimensions}`);
          report.dead++;
        } else upserts.push(change);
      }
      await this.write(upserts, (group) => this.config.qdrant.upsert(collection, { wait: true, points: group.map((change) => points.get(change.point_id)!) }), report);
      await this.write(deletes, (group) => this.config.qdrant.delete(collection, { wait: true, points: group.map((change) => change.point_id) }), report);
    }
    report.durationMs = performance.now() - started;
    if (claimed.length > 0) this.emit("batch", report);
    return report;
  }

  /** Sends one group; on a permanent error, retries point by point to find the culprit(s). */
  private async write(group: ClaimedChange[], send: (group: ClaimedChange[]) => Promise<unknown>, report: BatchReport): Promise<void> {
    if (group.length === 0) return;
    const { pool, log } = this.config;
    try {
      await send(group);
      this.reachable();
      report.synced += await acknowledge(pool, this.id, group);
      return;
    } catch (error) {
      const reason = describeQdrantError(error);
      // The collection vanished (deleted behind our back): recreate it, then retry.
      const collectionGone = statusOf(error) === 404;
      if (collectionGone) this.collectionReady = false;
      if (collectionGone || classifyError(error) === "transient") {
        this.unreachable(reason);
        const attempts = Math.max(...group.map((change) => change.attempts));
        const delay = Math.max(backoffMs(attempts, this.config.maxBackoffMs), retryAfterMs(error) ?? 0);
        await scheduleRetry(pool, this.id, group, delay, reason);
        report.retried += group.length;
        return;
      }
      if (group.length === 1) {
        await markDead(pool, this.id, group[0]!, reason);
        report.dead++;
        log.error({ pointId: group[0]!.point_id, error: reason }, "outbox change is dead");
        return;
      }
    }
    for (const change of group) await this.write([change], send, report);
  }

  private reachable(): void {
    if (this.unreachableSince !== null) {
      this.config.log.info({ downForMs: Date.now() - this.unreachableSince }, "Qdrant reachable again; catching up");
      this.unreachableSince = null;
    }
  }

  private unreachable(reason: string): void {
    if (this.unreachableSince === null) {
      this.unreachableSince = Date.now();
      this.config.log.warn({ error: reason }, "Qdrant request failed; changes wait in the outbox and are retried with backoff");
    }
  }

  private async run(): Promise<void> {
    const { log, batchSize } = this.config;
    while (this.running) {
      let report: BatchReport | null = null;
      try {
        this.woken = false;
        report = await this.syncBatch();
      } catch (error) {
        if (error instanceof ConfigError) log.error({ error: error.message }, "relay cannot sync; fix the collection, the relay keeps checking");
        else log.warn({ error: describeError(error) }, "relay pass failed; retrying after the poll interval");
      }
      if (report && report.claimed === batchSize) continue;
      if (report && report.claimed === 0) this.emit("idle");
      await this.sleep(await this.nextWakeIn().catch(() => this.config.pollIntervalMs));
    }
  }

  /** Until the next change falls due (a retry or a lease ending), capped by the poll interval. */
  private async nextWakeIn(): Promise<number> {
    const due = await this.config.pool.maybeOneFirst(sql.type(z.object({ ms: z.number().nullable() }))`
      select extract(epoch from min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at))) - now()) * 1000 as ms
      from outbox where collection = ${this.config.collection} and state = 'pending'
    `);
    if (due === null) return this.config.pollIntervalMs;
    return Math.min(this.config.pollIntervalMs, Math.max(10, due + 5));
  }

  private sleep(ms: number): Promise<void> {
    if (this.woken || !this.running) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  /** Holds a LISTEN connection; if it drops, reconnects after the poll interval (polling covers the gap). */
  private async listen(): Promise<void> {
    if (!this.running) return;
    const client = new pg.Client({ connectionString: this.config.databaseUrl, application_name: "pgconverge-relay" });
    client.on("notification", () => this.nudge());
    client.on("error", (error) => {
      this.config.log.warn({ error: describeError(error) }, "relay LISTEN connection lost; reconnecting");
      client.end().catch(() => {});
      if (this.listener === client) {
        this.listener = null;
        setTimeout(() => void this.listen().catch(() => {}), this.config.pollIntervalMs).unref();
      }
    });
    try {
      await client.connect();
      await client.query(`listen ${OUTBOX_CHANNEL}`);
      this.listener = client;
    } catch (error) {
      this.config.log.warn({ error: describeError(error) }, "relay could not LISTEN; polling until it can");
      await client.end().catch(() => {});
      setTimeout(() => void this.listen().catch(() => {}), this.config.pollIntervalMs).unref();
    }
  }
}
