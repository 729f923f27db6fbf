import { join } from "node:path";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { startEmbeddedPostgres } from "./embedded.ts";

export interface Database {
  url: string;
  /** Stops the embedded server if this process started it; otherwise does nothing. */
  close(): Promise<void>;
}

/** DATABASE_URL when set; otherwise the project's embedded Postgres, started or joined. */
export async function openDatabase(config: Config, log: Logger): Promise<Database> {
  if (config.DATABASE_URL) return { url: config.DATABASE_URL, close: async () => {} };
  const dataDir = join(config.PGCONVERGE_DATA_DIR, "pgdata");
  const server = await startEmbeddedPostgres({ dataDir, persistent: true });
  log.info({ dataDir: server.dataDir, port: Number(new URL(server.url).port) }, "using the embedded Postgres (set DATABASE_URL to use your own)");
  return { url: server.url, close: () => server.stop() };
}
