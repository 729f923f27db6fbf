import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { spawnWorker, type WorkerProcess } from "../../test/helpers/worker.ts";

export interface SelfExit {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Seconds since the fleet started. */
  atSeconds: number;
  /** The end of what the process printed, to say why. */
  output: string;
}

/** Log messages worth counting across all workers (pino's `msg`), for the report. */
const WATCHED = {
  /** A sweeper released the jobs of a worker it believed dead. */
  released: "worker stopped heartbeating; its jobs were released",
  /** A live worker found that a sweeper had declared it dead: its running jobs may have been taken. */
  declaredDeadWhileAlive: "this worker had been declared dead (missed heartbeats); registering again",
} as const;

interface Member {
  process: WorkerProcess;
  killedByUs: boolean;
}

/**
 * `size` real `pgconverge worker` processes, kept at that size like a supervisor would:
 * SIGKILLed ones and ones that exit by themselves are respawned. An exit we did not cause is
 * recorded as a finding with the process's last output.
 */
export class WorkerFleet {
  private readonly members = new Set<Member>();
  private readonly teardowns: Array<() => unknown> = [];
  private running = false;
  kills = 0;
  spawned = 0;
  readonly selfExits: SelfExit[] = [];
  readonly watched: Record<keyof typeof WATCHED, number> = { released: 0, declaredDeadWhileAlive: 0 };
  /** Every warning and error the workers logged, counted by message (pino's JSON lines). */
  readonly messages = new Map<string, number>();
  private readonly startedAt = Date.now();

  private readonly size: number;
  private readonly env: Record<string, string>;
  private readonly respawnDelayMs: number;

  constructor(size: number, env: Record<string, string>, respawnDelayMs = 300) {
    this.size = size;
    this.env = env;
    this.respawnDelayMs = respawnDelayMs;
  }

  start(): void {
    this.running = true;
    for (let i = 0; i < this.size; i++) this.spawn();
  }

  get alive(): number {
    return this.members.size;
  }

  /** SIGKILLs one worker chosen at random; it is respawned shortly after. */
  killRandom(): number | null {
    const members = [...this.members].filter((member) => !member.killedByUs);
    const member = members[Math.floor(Math.random() * members.length)];
    if (!member) return null;
    member.killedByUs = true;
    member.process.child.kill("SIGKILL");
    this.kills++;
    return member.process.child.pid ?? null;
  }

  /** Stops respawning and SIGKILLs what is left (the run's work is checked from the database, not from them). */
  async stop(): Promise<void> {
    this.running = false;
    for (const member of this.members) member.killedByUs = true;
    await Promise.all(this.teardowns.map((teardown) => teardown()));
  }

  private count(line: string): void {
    let message: string;
    try {
      const entry = JSON.parse(line) as { msg?: unknown; error?: unknown };
      // The error's first words tell a connection loss from an injected 503; ids and numbers are dropped.
      const error = typeof entry.error === "string" ? `: ${entry.error.replace(/[0-9a-f-]{8,}|\d+/g, "#").slice(0, 80)}` : "";
      message = `${String(entry.msg)}${error}`;
    } catch {
      message = line.slice(0, 120);
    }
    this.messages.set(message, (this.messages.get(message) ?? 0) + 1);
  }

  private spawn(): void {
    const worker = spawnWorker({ teardown: (fn) => this.teardowns.push(fn) }, { url: this.env.DATABASE_URL! }, this.env);
    this.spawned++;
    const member: Member = { process: worker, killedByUs: false };
    this.members.add(member);
    // CHAOS_WORKER_LOGS=<dir>: every worker's whole output, to follow a job through a failed run.
    const logDir = process.env.CHAOS_WORKER_LOGS;
    if (logDir) {
      const file = createWriteStream(join(logDir, `worker-${worker.child.pid}.log`));
      worker.child.stdout!.pipe(file);
      worker.child.stderr!.pipe(file);
    }
    let pending = "";
    worker.child.stdout!.setEncoding("utf8").on("data", (data: string) => {
      const lines = (pending + data).split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        for (const [key, message] of Object.entries(WATCHED)) if (line.includes(message)) this.watched[key as keyof typeof WATCHED]++;
        this.count(line);
      }
    });
    void worker.exited.then(({ code, signal }) => {
      this.members.delete(member);
      if (!member.killedByUs) {
        this.selfExits.push({ pid: worker.child.pid ?? 0, code, signal, atSeconds: Math.round((Date.now() - this.startedAt) / 100) / 10, output: worker.output().slice(-3_000) });
      }
      if (this.running) setTimeout(() => this.running && this.spawn(), this.respawnDelayMs);
    });
  }
}
