import pg from "pg";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { CONNECT_TIMEOUT_MS, KEEP_ALIVE } from "./connections.ts";

export interface ListenerConfig {
  /** A URL that keeps sessions: a direct connection (LISTEN through a transaction-mode pooler hears nothing). */
  url: string;
  channels: readonly string[];
  /** Called for every notification on the channels. */
  onNotification(message: pg.Notification): void;
  /** After a lost or refused connection, wait this long before connecting again, ms (polling covers the gap). */
  retryMs: number;
  log: Logger;
  /** Names the connection in pg_stat_activity and in log lines. */
  name: string;
}

/**
 * One session held open to LISTEN on a few channels, reconnecting after `retryMs` whenever it
 * is lost or cannot be opened. Its own connection, never a pool's: a pooled client may be
 * handed back mid-LISTEN. start() and stop() are idempotent.
 */
export class Listener {
  private client: pg.Client | null = null;
  private running = false;
  private retry: NodeJS.Timeout | null = null;

  private readonly config: ListenerConfig;

  constructor(config: ListenerConfig) {
    this.config = config;
  }

  /** Resolves once listening, or once the first attempt failed (a retry is then scheduled). */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.connect();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    const { url, channels, log, name } = this.config;
    // A connect that hangs (a server that accepts and never answers) would stop the retries;
    // keepalive notices a half-open session, which otherwise just hears nothing, forever.
    const client = new pg.Client({ connectionString: url, application_name: name, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, ...KEEP_ALIVE });
    client.on("notification", (message) => this.config.onNotification(message));
    client.on("error", (error) => {
      log.warn({ error: describeError(error) }, `${name}: LISTEN connection lost; reconnecting`);
      client.end().catch(() => {});
      if (this.client === client) {
        this.client = null;
        this.scheduleRetry();
      }
    });
    try {
      await client.connect();
      await client.query(channels.map((channel) => `listen ${pg.escapeIdentifier(channel)}`).join("; "));
      if (!this.running) {
        await client.end().catch(() => {});
        return;
      }
      this.client = client;
    } catch (error) {
      log.warn({ error: describeError(error) }, `${name}: could not LISTEN; polling until it can`);
      await client.end().catch(() => {});
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (!this.running) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.connect();
    }, this.config.retryMs);
    this.retry.unref();
  }
}
