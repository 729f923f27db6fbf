import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { sql, type DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { refreshJobLocks } from "../runtime/graphileJobs.ts";

export interface HeartbeatConfig {
  pool: DatabasePool;
  log: Logger;
  concurrency: number;
  /** How often to beat, ms; must be well under the sweeper's dead threshold. */
  intervalMs: number;
  /**
   * Task identifiers this process runs, recorded in `workers.tasks` so that jobs no live worker
   * can run are reported (the unknown_tasks view). Unset: recorded as null, "every task".
   */
  tasks?: readonly string[];
}

/**
 * graphile-worker considers a lock stale after 4 hours and would hand the job to another
 * worker. A live worker re-stamps its locks long before that, so its slow jobs stay its own.
 */
const LOCK_REFRESH_EVERY_MS = 10 * 60_000;
const LOCK_REFRESH_OLDER_THAN = "30 minutes";

/**
 * Registers this process in `workers` and refreshes its heartbeat. The row lists the
 * graphile-worker lock holder ids of this process, so that when it dies the sweeper of
 * any other worker can release exactly its jobs. Emits `beat` after each attempt (metrics
 * count them).
 */
export class Heartbeat extends EventEmitter<{ beat: [{ ok: boolean }] }> {
  readonly workerId = `${hostname()}-${process.pid}-${randomBytes(4).toString("hex")}`;
  private readonly lockerIds = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private lastLockRefresh = Date.now();

  private readonly config: HeartbeatConfig;

  constructor(config: HeartbeatConfig) {
    super();
    this.config = config;
  }

  async start(): Promise<void> {
    if (this.timer) return;
    await this.register();
    this.schedule();
  }

  /** The graphile-worker worker and pool ids of this process recorded so far. */
  get lockers(): readonly string[] {
    return [...this.lockerIds];
  }

  /** Records a graphile-worker worker or pool id of this process and beats at once. */
  addLocker(id: string): void {
    if (this.lockerIds.has(id)) return;
    this.lockerIds.add(id);
    void this.beat();
  }

  /** One heartbeat; re-registers if a sweeper removed this worker (it had stopped beating). */
  beat(): Promise<void> {
    this.running ??= this.beatOnce().finally(() => (this.running = null));
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
    // Called once this process runs nothing any more: a job still locked by one of its ids was
    // lost track of (e.g. graphile-worker could not record its outcome while the database was
    // away). Release it with the registration, or nobody would until graphile-worker's 4-hour expiry.
    await this.config.pool.query(sql.unsafe`
      with deregistered as (delete from workers where id = ${this.workerId} returning locker_ids)
      select graphile_worker.force_unlock_workers(locker_ids) from deregistered
    `);
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      void this.beat().finally(() => {
        if (this.timer) this.schedule();
      });
    }, this.config.intervalMs);
  }

  private async register(): Promise<void> {
    await this.config.pool.query(sql.unsafe`
      insert into workers (id, hostname, pid, concurrency, locker_ids, tasks)
      values (${this.workerId}, ${hostname()}, ${process.pid}, ${this.config.concurrency}, ${sql.array([...this.lockerIds], "text")},
              ${this.config.tasks ? sql.array([...this.config.tasks], "text") : null})
      on conflict (id) do update set heartbeat_at = now(), locker_ids = excluded.locker_ids, tasks = excluded.tasks
    `);
  }

  private async beatOnce(): Promise<void> {
    const { pool, log } = this.config;
    try {
      const lockers = [...this.lockerIds];
      const alive = await pool.maybeOneFirst(sql.unsafe`
        update workers set heartbeat_at = now(), locker_ids = ${sql.array(lockers, "text")}
        where id = ${this.workerId}
        returning id
      `);
      if (!alive) {
        log.warn({ workerId: this.workerId }, "this worker had been declared dead (missed heartbeats); registering again");
        await this.register();
      }
      if (Date.now() - this.lastLockRefresh >= LOCK_REFRESH_EVERY_MS && lockers.length > 0) {
        await refreshJobLocks(pool, lockers, LOCK_REFRESH_OLDER_THAN);
        this.lastLockRefresh = Date.now();
      }
      this.emit("beat", { ok: true });
    } catch (error) {
      log.warn({ error: describeError(error) }, "heartbeat failed; retrying at the next interval");
      this.emit("beat", { ok: false });
    }
  }
}
