import { join } from "node:path";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { checkPoolMode, type DatabaseConnections } from "./connections.ts";
import { startEmbeddedPostgres } from "./embedded.ts";

export interface Database extends DatabaseConnections {
  /** Stops the embedded server if this process started it; otherwise does nothing. */
  close(): Promise<void>;
}

/**
 * DATABASE_URL when set (with DATABASE_POOL_MODE and DATABASE_DIRECT_URL; with `checkPoolMode`,
 * checked against what the server really does: a ConfigError if they do not match); otherwise
 * the project's embedded Postgres, started or joined.
 */
export async function openDatabase(config: Config, log: Logger, options: { checkPoolMode?: boolean } = {}): Promise<Database> {
  if (config.DATABASE_URL) {
    const connections = { url: config.DATABASE_URL, poolMode: config.DATABASE_POOL_MODE, directUrl: config.DATABASE_DIRECT_URL };
    if (options.checkPoolMode) await checkPoolMode(connections);
    return { ...connections, close: async () => {} };
  }
  const dataDir = join(config.PGCONVERGE_DATA_DIR, "pgdata");
  const server = await startEmbeddedPostgres({ dataDir, persistent: true });
  log.info({ dataDir: server.dataDir, port: Number(new URL(server.url).port) }, "using the embedded Postgres (set DATABASE_URL to use your own)");
  return { url: server.url, poolMode: "session", close: () => server.stop() };
}
