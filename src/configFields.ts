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
