import { JOB_RESULT_MAX_BYTES } from "./defineTask.ts";
import { PermanentError, describeError } from "./errors.ts";

/**
 * The JSON text of what apply returned, for the history row; null for nothing. The cap is
 * measured the way job_history's CHECK measures it: the bytes of the jsonb value's text as
 * Postgres prints it (", " and ": " between items, numbers in plain decimal), so a result is
 * refused here exactly when the database would refuse it. A result that is not JSON, that
 * Postgres cannot store as jsonb (\u0000, a lone surrogate) or that exceeds the cap is a bug of
 * the task: a permanent failure (thrown inside the transaction, so the job's writes roll back).
 */
export function resultText(result: unknown): string | null {
  if (result === undefined) return null;
  let text: string | undefined;
  try {
    text = JSON.stringify(result);
  } catch (error) {
    throw new PermanentError(`apply returned a result that is not JSON: ${describeError(error)}`);
  }
  if (text === undefined) throw new PermanentError(`apply returned a result that is not JSON (a ${typeof result})`);
  const bytes = jsonbTextBytes(JSON.parse(text));
  if (bytes > JOB_RESULT_MAX_BYTES) {
    throw new PermanentError(`apply returned a result of ${bytes} bytes as JSON (as Postgres stores it); the cap is ${JOB_RESULT_MAX_BYTES} (return a summary, keep data in tables)`);
  }
  return text;
}

/** octet_length(value::jsonb::text) for a parsed JSON value. */
export function jsonbTextBytes(value: unknown): number {
  if (value === null) return 4;
  if (typeof value === "boolean") return value ? 4 : 5;
  if (typeof value === "number") return numericTextLength(JSON.stringify(value));
  // Postgres escapes a string's characters as JSON.stringify does (\", \\, \b \f \n \r \t, other controls as \u00xx).
  if (typeof value === "string") return stringBytes(value);
  if (Array.isArray(value)) {
    return 2 + value.reduce((sum: number, item) => sum + jsonbTextBytes(item), 0) + 2 * Math.max(0, value.length - 1);
  }
  const entries = Object.entries(value as Record<string, unknown>);
  return 2 + entries.reduce((sum, [key, item]) => sum + stringBytes(key) + 2 + jsonbTextBytes(item), 0) + 2 * Math.max(0, entries.length - 1);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function stringBytes(value: string): number {
  if (value.includes("\0") || LONE_SURROGATE.test(value)) {
    throw new PermanentError("apply returned a result Postgres cannot store as jsonb (a \\u0000 character or a lone UTF-16 surrogate in a string)");
  }
  return Buffer.byteLength(JSON.stringify(value));
}

/**
 * Length of Postgres numeric's text for a JSON number's text. Plain forms print as given;
 * JavaScript's exponent forms (1e+21, 1.5e-7) print in full: the digits, padded with zeros up
 * to the decimal point, or after "0." down to the last digit.
 */
function numericTextLength(text: string): number {
  const match = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
  if (!match) return text.length;
  const [, sign = "", whole = "", fraction = "", exponentText = "0"] = match;
  const digits = (whole + fraction).replace(/^0+(?=\d)/, "");
  const shift = Number(exponentText) - fraction.length;
  if (shift >= 0) return sign.length + digits.length + shift;
  const scale = -shift;
  const integerDigits = digits.length > scale ? digits.length - scale : 1;
  return sign.length + integerDigits + 1 + scale;
}
