// Logs: JSON lines when piped, one readable line per event on a terminal, expected failures one line without a stack.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import t from "tap";
import { createTestDatabase, waitFor } from "./helpers/db.ts";
import { addJobs, createEffectsTable, queuedJobs, TYPESCRIPT_NODE_ARGS } from "./helpers/fixtures.ts";
import { spawnWorker, waitForRegistration } from "./helpers/worker.ts";

type Line = Record<string, unknown> & { level: number; msg: string };

t.test("piped worker output is one JSON object per line; a transient failure and a dead letter log one line each, without a stack", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // More job slots than pool connections, as pgconverge's capped pools have on purpose.
  const worker = spawnWorker(t, db, { LOG_LEVEL: "info", RECONCILE_CRON: "off", WORKER_CONCURRENCY: "30" });
  let stdout = "";
  worker.child.stdout!.on("data", (chunk) => (stdout += chunk));
  await waitForRegistration(db, worker.child.pid!);
  await addJobs(db, "effect", [{ n: 1, failTimes: 1, failWith: "econnreset" }]);
  await addJobs(db, "effect", [{ n: 2, failWith: "http400", failTimes: 1 }]);
  await waitFor("the first attempt of job 1 to fail", async () => (await db.query("select 1 from graphile_worker.jobs where attempts = 1 and locked_at is null")).length > 0);
  await db.query("update graphile_worker._private_jobs set run_at = now() where attempts = 1");
  await waitFor("both jobs to leave the queue", async () => (await queuedJobs(db)) === 0);
  worker.child.kill("SIGTERM");
  t.equal((await worker.exited).code, 0, worker.output());

  const lines = stdout.split("\n").filter(Boolean);
  const parsed = lines.map((line) => {
    try {
      return JSON.parse(line) as Line;
    } catch {
      t.fail(`not a JSON line: ${line}`);
      return null;
    }
  });
  const events = parsed.filter((line): line is Line => line !== null);
  t.ok(events.length >= 4, "startup, jobs and shutdown were logged");
  t.notOk(events.some((line) => line.level >= 40 && /maxPoolSize/.test(String(line.msg))), "no warning about the deliberately small pool");
  t.notMatch(stdout, /\n\s+at /, "no stack trace anywhere");
  t.notOk(events.some((line) => "stack" in line || (typeof line.error === "object" && line.error !== null)), "errors are one-line strings");

  const [retried] = await db.query<{ job_id: string }>("select job_id from test_effects where n = 1");
  const [dead] = await db.query<{ job_id: string }>("select job_id from dead_letters");
  const about = (jobId: string) => events.filter((line) => line.jobId === jobId);
  const problems = (jobId: string) => about(jobId).filter((line) => line.level >= 40);

  t.match(problems(retried!.job_id), [{ level: 40, msg: "attempt failed; will retry", task: "effect", attempt: 1, error: "Error: read ECONNRESET", durationMs: Number }]);
  t.equal(problems(retried!.job_id).length, 1, "the transient failure is one line");
  t.match(about(retried!.job_id).filter((line) => line.msg === "job applied"), [{ level: 30, task: "effect", attempt: 2, durationMs: Number }]);
  t.match(problems(dead!.job_id), [{ level: 50, msg: "job dead-lettered", task: "effect", attempt: 1, reason: "permanent", error: "Error: Bad Request: vector dimension error", durationMs: Number }]);
  t.equal(about(dead!.job_id).length, 1, "the dead letter is one line");
  t.same(events.filter((line) => line.level >= 40 && line.jobId === undefined && line.component !== "relay"), [], "nothing else complained (graphile-worker's own failure lines stay at debug)");
});

const LOG_MODULE = fileURLToPath(new URL("../src/log.ts", import.meta.url));
const PROGRAM = `
  const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
  const log = createLogger("info");
  log.warn({ jobId: "42", task: "effect", attempt: 3, error: "Error: read ECONNRESET" }, "attempt failed; will retry");
  log.info({ jobId: "43", durationMs: 12 }, "job applied");
`;
const runProgram = (command: string, args: string[]) =>
  spawnSync(command, args, { encoding: "utf8", timeout: 30_000, env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" } });

t.test("a logger writing to a pipe writes JSON", async (t) => {
  const result = runProgram(process.execPath, [...TYPESCRIPT_NODE_ARGS, "--input-type=module", "-e", PROGRAM]);
  t.equal(result.status, 0, result.stderr);
  const lines = result.stdout.trim().split("\n").map((line) => JSON.parse(line) as Line);
  t.match(lines, [
    { level: 40, msg: "attempt failed; will retry", jobId: "42", error: "Error: read ECONNRESET" },
    { level: 30, msg: "job applied", jobId: "43", durationMs: 12 },
  ]);
});

const hasScript = spawnSync("script", ["--version"], { encoding: "utf8" }).status === 0;

t.test("a logger writing to a terminal prints one readable line per event", { skip: hasScript ? false : "needs util-linux `script` for a pseudo-terminal" }, async (t) => {
  const command = [process.execPath, ...TYPESCRIPT_NODE_ARGS, "--input-type=module", "-e", PROGRAM].map((arg) => `'${arg.replace(/'/g, "'\\''")}'`).join(" ");
  const result = runProgram("script", ["-qec", command, "/dev/null"]);
  t.equal(result.status, 0, result.stderr);
  // eslint-disable-next-line no-control-regex
  const lines = result.stdout.replace(/\u001b\[[0-9;]*m/g, "").replace(/\r/g, "").trim().split("\n");
  t.equal(lines.length, 2, result.stdout);
  t.match(lines[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: attempt failed; will retry \{.*"jobId":"42".*"error":"Error: read ECONNRESET".*\}$/);
  t.match(lines[1], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: job applied \{"jobId":"43","durationMs":12\}$/);
});

t.test("on a terminal, control characters in a log line are printed escaped", { skip: hasScript ? false : "needs util-linux `script` for a pseudo-terminal" }, async (t) => {
  const program = `
    const { createLogger } = await import(${JSON.stringify(LOG_MODULE)});
    createLogger("info").warn({ task: "evil\\u001b[2J\\u202e" }, "failed on click\\u001b]8;;http://evil\\u0007here");
  `;
  const command = [process.execPath, ...TYPESCRIPT_NODE_ARGS, "--input-type=module", "-e", program].map((arg) => `'${arg.replace(/'/g, "'\\''")}'`).join(" ");
  const result = runProgram("script", ["-qec", command, "/dev/null"]);
  t.equal(result.status, 0, result.stderr);
  // eslint-disable-next-line no-control-regex
  const output = result.stdout.replace(/\u001b\[[0-9;]*m/g, "").replace(/\r/g, "");
  t.notMatch(output, /[\u0007\u001b\u202e]/, "no BEL, ESC or bidi override reaches the terminal");
  t.match(output, "failed on click\\x1b]8;;http://evil\\x07here");
});
