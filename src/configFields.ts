import { z } from "zod";

/** A configuration problem: the CLI reports it as one line and exits with code 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** A whole-number setting within bounds (environment values are strings, hence coerce). */
export const int = (min: number, max: number) =>
  z.coerce
    .number({ invalid_type_error: "must be a whole number" })
    .int("must be a whole number")
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);

/** Turns a check returning the problem (or null) into a zod refinement. */
export function problemsOf(check: (value: string) => string | null) {
  return (value: string, context: z.RefinementCtx) => {
    const problem = check(value);
    if (problem) context.addIssue({ code: z.ZodIssueCode.custom, message: problem });
  };
}

export const URL_SYNTAX = "is not a valid URL: check the host and port, and percent-encode @ : / ? # % and spaces in the user name and password";
