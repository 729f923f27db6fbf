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

/**
 * A `$n` statement as a slonik query: its placeholders become template values. slonik takes an
 * array only as `sql.array(values, type)`, so an array placeholder must be cast (`$1::int[]`).
 */
function slonikStatement(statement: string, values: unknown[]) {
  const parts = statement.split(/\$\d+/);
  const args = [...statement.matchAll(/\$(\d+)(?:::(\w+)\[\])?/g)].map(([, index, arrayType]) => {
    const value = values[Number(index) - 1];
    if (!Array.isArray(value)) return value;
    if (!arrayType) throw new TypeError(`an array parameter needs a cast in the statement ($${index}::type[])`);
    // The type comes from our own statement text (\w+), never from a value; a fragment keeps
    // slonik from quoting it, so aliases such as int stay valid.
    return sql.array(value, sql.fragment(template([`${arrayType}[]`])));
  });
  return sql.unsafe(template(parts), ...(args as never[]));
}

/** slonik takes only what looks like a template literal: a frozen `raw` beside the strings. */
function template(parts: readonly string[]): TemplateStringsArray {
  return Object.freeze(Object.assign([...parts], { raw: Object.freeze([...parts]) })) as unknown as TemplateStringsArray;
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
