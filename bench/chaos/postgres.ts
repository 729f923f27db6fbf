import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres, type EmbeddedPostgresServer } from "../../src/db/embedded.ts";

/**
 * An embedded Postgres of the chaos run's own, in a fresh data directory, that can be
 * restarted on the same port and directory: clients (the workers) keep their DATABASE_URL
 * and must find the server again by themselves.
 */
export class RestartablePostgres {
  private server: EmbeddedPostgresServer | null = null;
  private readonly dataDir = mkdtempSync(join(tmpdir(), "pgconverge-chaos-"));
  private port: number | undefined;
  url = "";

  private static readonly SETTINGS = {
    // Three workers of up to ~20 connections each, plus killed workers' sessions until the server notices.
    max_connections: "300",
  };

  async start(): Promise<void> {
    // persistent: the data directory must survive stop() for the restart; stop() below removes it.
    this.server = await startEmbeddedPostgres({ dataDir: this.dataDir, persistent: true, settings: RestartablePostgres.SETTINGS, port: this.port });
    this.url = this.server.url;
    this.port = Number(new URL(this.url).port);
  }

  /** Fast shutdown (SIGINT: open sessions are terminated, in-flight transactions roll back), then start again. */
  async restart(): Promise<{ downMs: number }> {
    const started = Date.now();
    await this.server?.stop();
    this.server = null;
    await this.start();
    return { downMs: Date.now() - started };
  }

  async stop(): Promise<void> {
    await this.server?.stop();
    this.server = null;
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
