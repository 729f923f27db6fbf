import type pg from "pg";
import pTimeout from "p-timeout";
import { readMigrations, type Migration } from "../db/migrate.ts";
import { describeError } from "../runtime/errors.ts";

export type Readiness = { ready: true } | { ready: false; reason: string };

export interface ReadinessCheckConfig {
  /** A probe pool (createProbePool), whose own deadlines bound each statement. */
  pool: pg.Pool;
  /** Overall deadline of one check, ms: the answer is "not ready" rather than late. */
  timeoutMs: number;
  /** The migrations this version of pgconverge expects; defaults to the files of sql/. */
  migrations?: readonly Migration[];
}

const UNDEFINED_TABLE = "42P01";

/**
 * Ready means: the database answers `select 1` within the deadline, and the migrations it
 * records are exactly the files of `sql/` (none pending, none changed, none newer than this
 * version knows). Never throws; a failure is the reason.
 */
export function createReadinessCheck(config: ReadinessCheckConfig): () => Promise<Readiness> {
  const expected = config.migrations ?? readMigrations();
  return () =>
    pTimeout(check(config.pool, expected), { milliseconds: config.timeoutMs }).catch(
      (error: unknown): Readiness => ({ ready: false, reason: `database unreachable: ${describeError(error)}` }),
    );
}

async function check(pool: pg.Pool, expected: readonly Migration[]): Promise<Readiness> {
  await pool.query("select 1");
  let rows: { id: number; name: string; checksum: string }[];
  try {
    ({ rows } = await pool.query<{ id: number; name: string; checksum: string }>("select id, name, checksum from migrations order by id"));
  } catch (error) {
    if ((error as { code?: string }).code === UNDEFINED_TABLE) return { ready: false, reason: "migrations not applied (run pgconverge migrate)" };
    throw error;
  }
  const recorded = new Map(rows.map((row) => [row.id, row]));
  const changed = expected.filter((migration) => {
    const row = recorded.get(migration.id);
    return row && (row.checksum !== migration.checksum || row.name !== migration.name);
  });
  if (changed.length > 0) return { ready: false, reason: `applied migration differs from its file: ${changed.map((m) => m.name).join(", ")}` };
  const pending = expected.filter((migration) => !recorded.has(migration.id));
  if (pending.length > 0) return { ready: false, reason: `migrations pending: ${pending.map((m) => m.name).join(", ")} (run pgconverge migrate)` };
  const newer = rows.filter((row) => !expected.some((migration) => migration.id === row.id));
  if (newer.length > 0) return { ready: false, reason: `the database has migrations this version does not know: ${newer.map((row) => row.name).join(", ")}` };
  return { ready: true };
}
