// `npm test`: runs the type check and the tap suite against DATABASE_URL, or, when it is unset,
// against a throw-away embedded Postgres started here and removed afterwards.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedPostgresError, startEmbeddedPostgres } from "../src/db/embedded.ts";

const TEST_SERVER_SETTINGS = {
  // Parallel test files, each with its own database, pools and worker processes.
  max_connections: "500",
  // Tests kill workers, never this server, so durability buys nothing and costs time.
  fsync: "off",
  full_page_writes: "off",
};

// Which Node runs the suite, so that a CI log shows it (.ci/run runs it on two).
console.log(`# Node.js ${process.version}`);

let stopServer = async () => {};
const env = { ...process.env };
if (!env.DATABASE_URL) {
  const dataDir = mkdtempSync(join(tmpdir(), "pgconverge-test-"));
  const server = await startEmbeddedPostgres({ dataDir, persistent: false, settings: TEST_SERVER_SETTINGS }).catch((error: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    // One line that says what to do, not a stack trace.
    console.error(`npm test: ${error instanceof EmbeddedPostgresError ? error.message : `the embedded Postgres did not start: ${String(error)}`}`);
    process.exit(1);
  });
  env.DATABASE_URL = server.url;
  stopServer = async () => {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  console.log(`# embedded Postgres for this run: ${server.url}`);
} else {
  console.log(`# tests run against DATABASE_URL (${new URL(env.DATABASE_URL).host})`);
}

// The type check runs beside the tests, not before them: it is half a minute of one core while
// the tests leave the other idle. A type error fails the run once the tests have finished (they
// are not stopped early: a test file killed by a signal leaves what it started running).
const typecheck = spawn(process.execPath, [join("node_modules", "typescript", "bin", "tsc"), "--noEmit"], { stdio: ["ignore", "pipe", "pipe"] });
let typecheckOutput = "";
for (const stream of [typecheck.stdout, typecheck.stderr]) stream.setEncoding("utf8").on("data", (data: string) => (typecheckOutput += data));
const typechecked = new Promise<number>((resolve) => typecheck.on("close", (exitCode) => resolve(exitCode ?? 1)));

const tap = spawn(process.execPath, [join("node_modules", "tap", "dist", "esm", "run.mjs"), ...process.argv.slice(2)], {
  stdio: "inherit",
  env,
});
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    interrupted = true;
    typecheck.kill(signal);
    tap.kill(signal);
  });
}
const tested = await new Promise<number>((resolve) => tap.on("exit", (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0))));
const typeErrors = await typechecked;
await stopServer();
if (interrupted) process.exit(tested || 1);
if (typeErrors) console.error(`\nnpm test: the type check (tsc --noEmit) failed:\n${typecheckOutput}`);
else console.log("# type check (tsc --noEmit): passed");
process.exit(typeErrors || tested);
