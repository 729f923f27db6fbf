import pg from "pg";
import { migrate as migrateSchema } from "../db/migrate.ts";
import { createLogger, type Logger } from "../log.ts";

export interface MigrateOptions {
  /** The Postgres to migrate (a postgres:// URL); or give `pool`. */
  databaseUrl?: string;
  /** An application's `pg` Pool; it is not ended. */
  pool?: pg.Pool;
  /** A pino logger. Default: JSON lines on stdout at level "info". */
  logger?: Logger;
}

/**
 * Applies graphile-worker's schema and pgconverge's own (`sql/` of the package), forward-only,
 * idempotent and under an advisory lock, so workers starting together take turns. Resolves
 * with the names of the migrations applied now (empty when the schema is up to date).
 */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  if (options.databaseUrl === undefined && options.pool === undefined) throw new TypeError("migrate: give databaseUrl or pool");
  const pool = options.pool ?? new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  try {
    return await migrateSchema(pool, options.logger ?? createLogger("info"));
  } finally {
    if (!options.pool) await pool.end();
  }
}
