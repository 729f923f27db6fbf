import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import type { DatabasePool } from "slonik";
import { Listener } from "../db/listener.ts";
import type { Logger } from "../log.ts";
import { classifyError, describeError } from "../runtime/errors.ts";
import { acknowledge, claimChanges, enqueuePointChanges, flagUndeclared, markDead, nextDueInMs, readOwner, scheduleRetry, type ClaimedChange } from "./outbox.ts";
import { ConfigError } from "../config.ts";
import { checkQdrantVersion, describeQdrantError, ensureCollection, nonFloat32At, olderThan, restPointWrites, retryAfterMs, statusOf, type PointWrites, type QdrantClient, type WriteOrdering } from "./qdrant.ts";
import { checkSyncs, HASH_KEY, OWNER_KEY, pointIdText, qdrantPointId, STAMP_KEY, type PointState, type Sync } from "./sync.ts";

export const OUTBOX_CHANNEL = "pgconverge_outbox";

export interface RelayConfig {
  pool: DatabasePool;
  /**
   * Where the relay holds its LISTEN session (for its lifetime): a URL that keeps sessions. Null
   * behind a transaction-mode pooler without a direct connection: the relay then finds changes
   * by polling every pollIntervalMs only.
   */
  listenUrl: string | null;
  qdrant: QdrantClient;
  /**
   * How points are written: over gRPC when QDRANT_GRPC_URL is set (createGrpcPointWrites); by
   * default with the REST client. Checked before the first write, closed when the relay stops.
   */
  points?: PointWrites;
  /**
   * The syncs this relay serves, one collection each. A point whose
   * vector has another size than its sync declares is dead without a request.
   */
  syncs: readonly Sync[];
  log: Logger;
  /** Changes per Qdrant request. */
  batchSize: number;
  /** Fallback poll when no notification arrives, ms. */
  pollIntervalMs: number;
  /** How long a claimed change stays this relay's; must exceed the Qdrant request deadline. */
  leaseMs: number;
  /** Backoff after transient failures: from 500 ms doubling to this cap, with jitter. */
  maxBackoffMs: number;
  /** Qdrant's `ordering` of every write (QDRANT_WRITE_ORDERING); default "medium". */
  writeOrdering?: WriteOrdering;
  /** Batches being written at once while a backlog drains; default IN_FLIGHT_BATCHES. */
  inFlight?: number;
}

export interface BatchReport {
  claimed: number;
  synced: number;
  retried: number;
  dead: number;
  durationMs: number;
}

const BASE_BACKOFF_MS = 500;

/**
 * Batches in flight at once. One batch at a time left the relay idle for most of each round
 * trip (claim, load, upsert, acknowledge; bench/relayBench.ts); a few overlap them. Each
 * batch is acknowledged on its own, after its own write, so the order they finish in does
 * not matter.
 */
export const IN_FLIGHT_BATCHES = 4;

/** Exponential backoff with "equal jitter": half the step fixed, half random. */
export function backoffMs(attempts: number, maxBackoffMs: number): number {
  const step = Math.min(maxBackoffMs, BASE_BACKOFF_MS * 2 ** Math.min(attempts, 30));
  return step / 2 + Math.random() * (step / 2);
}

/**
 * Drains the outbox into Qdrant, for every declared sync side by side. Woken by LISTEN/NOTIFY
 * when changes commit, with a slow poll as a fallback; claims batches under a lease (SKIP
 * LOCKED) across its collections, reads the current state of each key through its sync and
 * upserts or deletes accordingly (one request per collection), so processing order cannot make
 * Qdrant diverge; acknowledges a row only if its version did not move meanwhile. No
 * transaction is open during a Qdrant request. Any number of relays may run. Every point
 * written carries this database's owner id, the row's hash and the claim's version stamp in
 * its payload; every write is conditional on the stored point's stamp being smaller, so a write
 * that lands late never replaces a newer one.
 */
export class Relay extends EventEmitter<{ batch: [BatchReport]; idle: [] }> {
  readonly id = `relay-${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private running = false;
  private loop: Promise<void> | null = null;
  private listener: Listener | null = null;
  private wake: (() => void) | null = null;
  private woken = false;
  private unreachableSince: number | null = null;
  /** Collections known to exist with the declared vectors. */
  private readonly ready = new Set<string>();
  private readonly syncs: Map<string, Sync>;
  private owner: string | null = null;
  private versionChecked = false;
  private restWrites: PointWrites | null = null;
  /** Undeclared collections already warned about. */
  private readonly warned = new Set<string>();

  private readonly config: RelayConfig;

  constructor(config: RelayConfig) {
    super();
    this.config = config;
    checkSyncs(config.syncs);
    this.syncs = new Map(config.syncs.map((sync) => [sync.collection, sync]));
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { listenUrl, log, pollIntervalMs } = this.config;
    if (listenUrl === null) {
      log.warn({ pollIntervalMs }, "no session for LISTEN (transaction-mode pooler, no direct URL): outbox changes are found by polling only");
    } else {
      this.listener = new Listener({ url: listenUrl, channels: [OUTBOX_CHANNEL], onNotification: () => this.nudge(), retryMs: pollIntervalMs, log, name: "pgconverge-relay" });
      await this.listener.start();
    }
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.nudge();
    await this.loop;
    const listener = this.listener;
    this.listener = null;
    await listener?.stop();
    this.config.points?.close?.();
  }

  /** Wakes the loop now (used on notifications). */
  nudge(): void {
    this.woken = true;
    this.wake?.();
  }

  /**
   * Creates the collections that are missing. Throws ConfigError if one exists with other
   * vectors; a transient failure leaves the relay waiting (changes stay pending, nothing dies).
   * True once every collection is ready.
   */
  async prepareCollections(): Promise<boolean> {
    this.owner ??= await readOwner(this.config.pool);
    for (const sync of this.config.syncs) {
      if (this.ready.has(sync.collection)) continue;
      try {
        if (!this.versionChecked) {
          await checkQdrantVersion(this.config.qdrant);
          await this.config.points?.check?.();
        }
        this.versionChecked = true;
        const outcome = await ensureCollection(this.config.qdrant, { name: sync.collection, size: sync.vectors.size, distance: sync.vectors.distance });
        if (outcome === "created") this.config.log.info({ collection: sync.collection, size: sync.vectors.size }, "Qdrant collection created");
        this.ready.add(sync.collection);
        this.reachable();
      } catch (error) {
        if (error instanceof ConfigError) throw error;
        this.unreachable(describeQdrantError(error));
        break;
      }
    }
    return this.ready.size === this.syncs.size;
  }

  /** Claims and syncs one batch (changes of several collections, one request per collection and kind). */
  async syncBatch(): Promise<BatchReport> {
    const started = performance.now();
    return this.syncClaimed(await this.claim(), started);
  }

  /** Claims the next batch under a lease (empty if no collection is ready). */
  private async claim(): Promise<readonly ClaimedChange[]> {
    const { pool, batchSize, leaseMs } = this.config;
    await this.prepareCollections();
    if (this.ready.size === 0) return [];
    return claimChanges(pool, this.id, [...this.ready], batchSize, leaseMs);
  }

  /** Writes a claimed batch and acknowledges what was written. */
  private async syncClaimed(claimed: readonly ClaimedChange[], started: number): Promise<BatchReport> {
    const report: BatchReport = { claimed: claimed.length, synced: 0, retried: 0, dead: 0, durationMs: 0 };
    const byCollection = new Map<string, ClaimedChange[]>();
    for (const change of claimed) {
      const group = byCollection.get(change.collection);
      if (group) group.push(change);
      else byCollection.set(change.collection, [change]);
    }
    for (const [collection, changes] of byCollection) await this.syncCollection(this.syncs.get(collection)!, changes, report);
    report.durationMs = performance.now() - started;
    if (claimed.length > 0) this.emit("batch", report);
    return report;
  }

  private async syncCollection(sync: Sync, claimed: ClaimedChange[], report: BatchReport): Promise<void> {
    const { pool } = this.config;
    const { collection, vectors } = sync;
    const points = new Map<string, PointState>();
    try {
      const loaded = await sync.load(pool, claimed.map((change) => qdrantPointId(change.point_id)));
      for (const [id, point] of loaded) points.set(pointIdText(id), point);
    } catch (error) {
      // The application's query failed (or returned a bad id): nothing was written; try again later.
      const reason = `sync "${collection}": load failed: ${describeError(error)}`;
      this.config.log.warn({ collection, error: reason }, "could not load points; the changes are retried");
      const attempts = Math.max(...claimed.map((change) => change.attempts));
      await scheduleRetry(pool, this.id, claimed, backoffMs(attempts, this.config.maxBackoffMs), reason);
      report.retried += claimed.length;
      return;
    }
    const upserts: ClaimedChange[] = [];
    const deletes: ClaimedChange[] = [];
    for (const change of claimed) {
      const point = points.get(change.point_id);
      const badValue = point ? nonFloat32At(point.vector) : -1;
      if (!point) deletes.push(change);
      else if (point.vector.length !== vectors.size) {
        await markDead(pool, this.id, change, `vector has ${point.vector.length} dimensions; collection "${collection}" expects ${vectors.size}`);
        report.dead++;
      } else if (badValue !== -1) {
        // Refused by Qdrant over REST (printed as null), stored unchecked over gRPC: refused here either way.
        await markDead(pool, this.id, change, `vector value ${point.vector[badValue]} at index ${badValue} is not a finite float32`);
        report.dead++;
      } else upserts.push(change);
    }
    const owner = this.owner!;
    const ordering = this.config.writeOrdering ?? "medium";
    const asPoint = (change: ClaimedChange) => {
      const point = points.get(change.point_id)!;
      // The reserved keys last: an application's payload cannot forge the owner or the stamp.
      return { id: qdrantPointId(change.point_id), vector: point.vector, payload: { ...point.payload, [OWNER_KEY]: owner, [HASH_KEY]: point.hash, [STAMP_KEY]: change.stamp } };
    };
    const stamped = (group: ClaimedChange[]) => olderThan(owner, group.map((change) => ({ id: qdrantPointId(change.point_id), stamp: change.stamp })));
    const writes = this.config.points ?? (this.restWrites ??= restPointWrites(this.config.qdrant));
    await this.write(sync, upserts, (group) => writes.upsert(collection, { wait: true, ordering, points: group.map(asPoint), update_filter: stamped(group) }), report, true);
    await this.write(
      sync,
      deletes,
      (group) => writes.delete(collection, { wait: true, ordering, filter: { must: [{ has_id: group.map((change) => qdrantPointId(change.point_id)) }, stamped(group)] } }),
      report,
      false,
    );
  }

  /**
   * Sends one group; on a permanent error, retries point by point to find the culprit(s). An
   * upsert whose lease was lost meanwhile may have landed after the delete of another relay that
   * took the key over, and Qdrant inserts a missing point whatever the filter says: its keys are
   * synced again, so the current state (the delete) is written once more, with a greater stamp.
   */
  private async write(sync: Sync, group: ClaimedChange[], send: (group: ClaimedChange[]) => Promise<unknown>, report: BatchReport, upsert: boolean): Promise<void> {
    if (group.length === 0) return;
    const { pool, log } = this.config;
    try {
      await send(group);
      this.reachable();
      const { acknowledged, lost } = await acknowledge(pool, this.id, group);
      report.synced += acknowledged;
      if (upsert && lost.length > 0) {
        log.warn({ collection: sync.collection, points: lost.length }, "lease expired while a write was in flight; those points are synced again");
        await enqueuePointChanges(pool, sync.collection, lost.map((change) => change.point_id));
      }
      return;
    } catch (error) {
      const reason = describeQdrantError(error);
      // The collection vanished (deleted behind our back): recreate it, then retry.
      const collectionGone = statusOf(error) === 404;
      if (collectionGone) this.ready.delete(sync.collection);
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
        log.error({ collection: sync.collection, pointId: group[0]!.point_id, error: reason }, "outbox change is dead");
        return;
      }
    }
    for (const change of group) await this.write(sync, [change], send, report, upsert);
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

  /**
   * Claims one batch at a time (claims never race each other) and, while a backlog drains
   * (full batches), writes up to `inFlight` of them at once: the next batch is claimed and
   * loaded while earlier ones are on the wire. Claimed keys are leased, so batches in flight hold disjoint keys; a
   * key written again meanwhile is claimed again only after its batch is acknowledged, with a
   * greater stamp.
   */
  private async run(): Promise<void> {
    const { log, batchSize } = this.config;
    const limit = Math.max(1, this.config.inFlight ?? IN_FLIGHT_BATCHES);
    const inFlight = new Set<Promise<void>>();
    const failed = (error: unknown) => {
      if (error instanceof ConfigError) log.error({ error: error.message }, "relay cannot sync until this is fixed; it keeps checking");
      else log.warn({ error: describeError(error) }, "relay pass failed; retrying after the poll interval");
    };
    let failures = 0;
    while (this.running) {
      let claimed: readonly ClaimedChange[] | null = null;
      const started = performance.now();
      try {
        this.woken = false;
        claimed = await this.claim();
      } catch (error) {
        failed(error);
      }
      if (claimed && claimed.length > 0) {
        const batch: Promise<void> = this.syncClaimed(claimed, started).then(
          () => {},
          (error: unknown) => {
            failures++;
            failed(error);
          },
        );
        inFlight.add(batch);
        void batch.finally(() => inFlight.delete(batch));
        // A full batch means a backlog: claim the next one while this one is written. A partial
        // one means the backlog is drained: wait for the writes, so that changes arriving
        // meanwhile make one bigger batch rather than many small requests.
        if (claimed.length === batchSize && inFlight.size < limit) continue;
        if (claimed.length === batchSize) await Promise.race(inFlight);
        else await Promise.all(inFlight);
        // A failed pass (e.g. the database went away) waits for the poll interval, as before.
        if (failures > 0) {
          failures = 0;
          await this.sleep(this.config.pollIntervalMs);
          continue;
        }
        if (claimed.length === batchSize || this.woken) continue;
      }
      if (claimed && claimed.length === 0) {
        // Idle means nothing claimable and nothing in flight.
        await Promise.all(inFlight);
        if (this.woken) continue;
        await this.flagUndeclared().catch((error: unknown) => log.warn({ error: describeError(error) }, "could not check for undeclared collections"));
        this.emit("idle");
      }
      await this.sleep(await this.nextWakeIn().catch(() => this.config.pollIntervalMs));
    }
    await Promise.all(inFlight);
  }

  /** Until the next change falls due (a retry or a lease ending), capped by the poll interval. */
  private async nextWakeIn(): Promise<number> {
    const due = await nextDueInMs(this.config.pool, [...this.syncs.keys()]);
    if (due === null) return this.config.pollIntervalMs;
    return Math.min(this.config.pollIntervalMs, Math.max(10, due + 5));
  }

  /**
   * Changes for a collection no sync of this relay declares are not claimed (another relay may
   * serve it): they stay pending, with a last_error saying why, and one warning per collection.
   */
  private async flagUndeclared(): Promise<void> {
    const collections = await flagUndeclared(this.config.pool, [...this.syncs.keys()], this.id);
    for (const collection of collections.filter((name) => !this.warned.has(name))) {
      this.warned.add(collection);
      this.config.log.warn({ collection }, "outbox changes for a collection no sync declares; they stay pending until a relay that declares it runs");
    }
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
}
