import type { FollowUpJobSpec, JobKeyMode } from "./defineTask.ts";

const JOB_KEY_MODES: readonly JobKeyMode[] = ["replace", "preserve_run_at"];
const SMALLINT = 32_767;

/**
 * Checks a job spec before it reaches graphile-worker's add_job, whose own errors are database
 * errors far from the call (or none: a mode without a key is silently ignored). Throws a
 * TypeError of one line naming `caller` and the option.
 */
export function checkJobSpec(spec: FollowUpJobSpec, caller: string): void {
  const problem = specProblem(spec);
  if (problem) throw new TypeError(`${caller}: ${problem}`);
}

function specProblem(spec: FollowUpJobSpec): string | null {
  if (typeof spec !== "object" || spec === null) return "the job spec must be an object";
  const { queueName, runAt, maxAttempts, jobKey, jobKeyMode, priority } = spec;
  if (queueName !== undefined && (typeof queueName !== "string" || queueName === "" || queueName.length > 128)) {
    return "queueName must be a non-empty string of at most 128 characters";
  }
  if (runAt !== undefined && !(runAt instanceof Date && !Number.isNaN(runAt.getTime()))) return "runAt must be a valid Date";
  if (maxAttempts !== undefined && !(Number.isInteger(maxAttempts) && maxAttempts >= 1 && maxAttempts <= SMALLINT)) {
    return `maxAttempts must be a whole number from 1 to ${SMALLINT} (got ${String(maxAttempts)})`;
  }
  if (priority !== undefined && !(Number.isInteger(priority) && Math.abs(priority) <= SMALLINT)) {
    return `priority must be a whole number from -${SMALLINT} to ${SMALLINT} (got ${String(priority)})`;
  }
  if (jobKey !== undefined && (typeof jobKey !== "string" || jobKey === "")) return "jobKey must be a non-empty string";
  if (jobKeyMode !== undefined) {
    if (!JOB_KEY_MODES.includes(jobKeyMode)) return `jobKeyMode must be one of ${JOB_KEY_MODES.join(", ")} (got ${JSON.stringify(jobKeyMode)})`;
    if (jobKey === undefined) return "jobKeyMode needs a jobKey";
  }
  return null;
}
