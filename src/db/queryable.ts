import { sql, type CommonQueryMethods } from "slonik";

/**
 * A database handle that the public write functions (addJob, enqueueSync) go through: a `pg`
 * Client or PoolClient inside the application's transaction, a `pg` Pool (the write then
 * commits on its own), or anything with `query(text, values)` returning a promise. A slonik
 * connection, pool or transaction is accepted as well.
 */
export interface Queryable {
  query(text: string, values: unknown[]): Promise<unknown>;
}

/** A slonik connection, pool or transaction: its query takes sql tokens, not text. */
function isSlonik(db: unknown): db is CommonQueryMethods {
  const candidate = db as Partial<CommonQueryMethods> | null;
  return typeof candidate?.anyFirst === "function" && typeof candidate.maybeOneFirst === "function";
}

/** A `$n` statement as a slonik query: its placeholders become template values. */
function slonikStatement(statement: string, values: unknown[]) {
  const parts = statement.split(/\$\d+/);
  const args = [...statement.matchAll(/\$(\d+)/g)].map((match) => values[Number(match[1]) - 1]);
  // slonik takes only what looks like a template literal: a frozen `raw` beside the strings.
  const strings = Object.freeze(Object.assign([...parts], { raw: Object.freeze([...parts]) })) as unknown as TemplateStringsArray;
  return sql.unsafe(strings, ...(args as never[]));
}

/**
 * Runs one `$n` statement through whichever driver the application handed over, so each write
 * has one SQL text for every driver. `caller` names the function in the error for a bad handle.
 */
export async function runStatement(db: Queryable | CommonQueryMethods, statement: string, values: unknown[], caller: string): Promise<void> {
  if (isSlonik(db)) await db.query(slonikStatement(statement, values));
  else if (typeof (db as Queryable | null)?.query === "function") await (db as Queryable).query(statement, values);
  else throw new TypeError(`${caller}: db must be a pg client or pool, a slonik connection, or have query(text, values)`);
}
