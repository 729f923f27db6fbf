/** Bad usage of the CLI: reported as one line, exit code 2. */
export class UsageError extends Error {}

const MAX_BIGINT = 9_223_372_036_854_775_807n;

/**
 * Checks that every id is a row id (a positive bigint), so that a typo is a usage error
 * rather than a Postgres "out of range" failure.
 */
export function checkIds(command: string, noun: string, ids: readonly string[]): void {
  const bad = ids.find((id) => !/^[1-9][0-9]{0,18}$/.test(id) || BigInt(id) > MAX_BIGINT);
  if (bad !== undefined) throw new UsageError(`${command}: ${JSON.stringify(bad)} is not ${noun}`);
}

/** A flag's value with the surrounding blanks removed; a blank value is a usage error. */
export function nonBlank(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.trim() === "") throw new UsageError(`--${flag} needs a value that is not blank`);
  return value;
}
