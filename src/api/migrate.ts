import pg from "pg";
import { migrate as migrateSchema, type AppMigrations } from "../db/migrate.ts";
import { createLogger, type Logger } from "../log.ts";

export interface MigrateOptions {
  /** The Postgres to migrate (a postgres:// URL); or give `pool`. */
  databaseUrl?: string;
  /** An application's `pg` Pool; it is not ended. */
  pool?: pg.Pool;
  /**
   * A direct (session) connection to the same database (a transaction-mode pooler's
   * DATABASE_DIRECT_URL): when given, the migrations run over it, on a pool of two
   * connections closed at the end, and `databaseUrl`/`pool` is not used. Default none.
   */
  databaseDirectUrl?: string | undefined;
  /** A pino logger. Default: JSON lines on stdout at level "info". */
  logger?: Logger;
  /**
   * The application's own migrations: `name` (lowercase letters, digits, "_" and "-"; not
   * beginning with "pgconverge") and the `directory` of its numbered files (NNNNNN_name.sql,
   * from 000001). Applied after pgconverge's, under the same lock, and recorded apart (the set
   * `name` in the migrations table). Default: none.
   */
  app?: AppMigrations;
}

/**
 * Applies graphile-worker's schema, pgconverge's own (`sql/` of the package) and then the
 * application's (`app`), forward-only, idempotent and under an advisory lock, so workers
 * starting together take turns. A database migrated by pgconverge 0.1 is upgraded on the way.
 * Resolves with the names of the migrations applied now (an application's as `name/file`;
 * empty when the schema is up to date).
 */
export async function migrate(options: MigrateOptions): Promise<string[]> {
  if (options.databaseUrl === undefined && options.pool === undefined && options.databaseDirectUrl === undefined) throw new TypeError("migrate: give databaseUrl or pool");
  const own = options.databaseDirectUrl ?? (options.pool ? undefined : options.databaseUrl);
  const pool = own === undefined ? options.pool! : new pg.Pool({ connectionString: own, max: 2, application_name: "pgconverge-migrate" });
  // A lost connection fails the query in flight; unhandled, the pool's "error" would end the process.
  if (own !== undefined) {
    pool.on("error", () => {});
    pool.on("connect", (client) => client.on("error", () => {}));
  }
  try {
    return await migrateSchema(pool, options.logger ?? createLogger("info"), options.app ? { app: options.app } : {});
  } finally {
    if (own !== undefined) await pool.end();
  }
}
