import type pg from "pg";
import pTimeout from "p-timeout";
import { checkMigrations, type MigrationOptions } from "../db/migrate.ts";
import { describeError } from "../runtime/errors.ts";

export type Readiness = { ready: true } | { ready: false; reason: string };

export interface ReadinessCheckConfig {
  /** A probe pool (createProbePool), whose own deadlines bound each statement. */
  pool: pg.Pool;
  /** Overall deadline of one check, ms: the answer is "not ready" rather than late. */
  timeoutMs: number;
  /** The migrations expected: pgconverge's (the files of sql/ by default) and the application's, if any. */
  migrations?: MigrationOptions;
}

/**
 * Ready means: the database answers `select 1` within the deadline, and the migrations it
 * records are exactly the files of `sql/`, and of the application's directory when it has
 * one (none pending, none changed, none newer than this version knows). Never throws; a failure is the reason.
 */
export function createReadinessCheck(config: ReadinessCheckConfig): () => Promise<Readiness> {
  const expected = config.migrations ?? {};
  return () =>
    pTimeout(check(config.pool, expected), { milliseconds: config.timeoutMs }).catch(
      (error: unknown): Readiness => ({ ready: false, reason: `database unreachable: ${describeError(error)}` }),
    );
}

async function check(pool: pg.Pool, expected: MigrationOptions): Promise<Readiness> {
  await pool.query("select 1");
  const schema = await checkMigrations(pool, expected);
  return schema.ok ? { ready: true } : { ready: false, reason: schema.reason };
}
