/**
 * Wakes this process's idle job slots when a job it deferred becomes due. graphile-worker
 * fetches due jobs when a slot frees up, on a notification, or at its next poll
 * (POLL_INTERVAL_MS, 2 s by default); a job deferred to a rate limit's turn that waits for the
 * poll misses its turn, and the turn is lost to the whole fleet. Timers are coalesced per
 * BUCKET_MS and never keep the process alive.
 */
export class DueNudger {
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private stopped = false;

  private readonly nudge: (count: number) => void;

  constructor(nudge: (count: number) => void) {
    this.nudge = nudge;
  }

  /** Nudges once `runAt` has come (one more job per deferral due in the same bucket). */
  at(runAt: Date): void {
    if (this.stopped) return;
    const bucket = Math.ceil(runAt.getTime() / BUCKET_MS) * BUCKET_MS;
    const existing = this.timers.get(bucket) as (NodeJS.Timeout & { count?: number }) | undefined;
    if (existing) {
      existing.count = (existing.count ?? 1) + 1;
      return;
    }
    const timer: NodeJS.Timeout & { count?: number } = setTimeout(() => {
      this.timers.delete(bucket);
      this.nudge(timer.count ?? 1);
    }, Math.max(0, bucket - Date.now()));
    timer.unref();
    this.timers.set(bucket, timer);
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}

const BUCKET_MS = 10;
