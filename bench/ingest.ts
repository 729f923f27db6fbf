// Ingest benchmark: `pgconverge ingest` of a directory of small files, run as a user runs it (the
// CLI in a child process, so its start-up is counted), three times over the same directory: all
// new, all unchanged (skipped without a write), all changed. With `--baseline`, the CLI's
// start-up alone (`pgconverge ingest` of one file, seconds.oneFile), to tell it from the per-file
// cost. `--cli` runs another checkout's bin/pgconverge.js (e.g. the previous release) on the
// same server and files, side by side. On a loaded machine the CLI's start-up swamps the rest, so
// the same files are also written in-process, without it: one transaction per file (the old
// way) against the CLI's batches, on fresh databases of the same server.
//   node --conditions=pgconverge-source --import tsx bench/ingest.ts [--files 2000] [--cli other/bin/pgconverge.js]
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadPipelineConfig } from "../pipeline/config.ts";
import { expandInputs, readInput, type TextDocument } from "../pipeline/inputs.ts";
import { upsertDocuments } from "../pipeline/queries.ts";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../src/db/pools.ts";
import { PIPELINE_MIGRATIONS, testLog } from "../test/helpers/db.ts";
import { createDatabase, describeMachine, round, startServer, type BenchServer } from "./lib.ts";

function runCli(cli: string, args: string[], env: Record<string, string>): Promise<{ seconds: number; stdout: string }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, LOG_LEVEL: "warn", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (data: string) => (stdout += data));
    child.stderr.setEncoding("utf8").on("data", (data: string) => (stderr += data));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) reject(new Error(`pgconverge ${args.join(" ")} exited ${code}: ${stderr.trim()}`));
      else resolve({ seconds: round((performance.now() - started) / 1000, 2), stdout: stdout.trim() });
    });
  });
}

/** Small markdown files of a few sentences, 40 per directory; `edition` changes every file's text. */
function writeFiles(dir: string, files: number, edition: number): void {
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `part-${Math.floor(i / 40)}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `note-${i}.md`), `# Note ${i}\n\nEdition ${edition}. The keeper of note ${i} writes a few lines about lighthouses, tides and ships.\n`);
  }
}

/** Reads the directory's files and upserts them, `batch` per transaction, twice (new, then unchanged); seconds of each. */
async function writeInProcess(server: BenchServer, dir: string, batch: number) {
  const database = await createDatabase(server, "ingest_in_process");
  const queuePool = createQueuePool(database.url, 2);
  const appPool = await createAppPool(database.url, 2, { statementTimeoutMs: 60_000 });
  try {
    await migrate(queuePool, testLog, { app: PIPELINE_MIGRATIONS });
    const pass = async () => {
      const started = performance.now();
      const { inputs } = await expandInputs([dir], "stdin");
      let documents: TextDocument[] = [];
      const flush = async () => {
        const written = documents;
        documents = [];
        if (written.length > 0) await appPool.transaction((tx) => upsertDocuments(tx, written));
      };
      for (const input of inputs) {
        const result = await readInput(input, loadPipelineConfig({}).INGEST_MAX_BYTES);
        if (result.ok) documents.push(result.document);
        if (documents.length >= batch) await flush();
      }
      await flush();
      return round((performance.now() - started) / 1000, 2);
    };
    return { documentsPerTransaction: batch, created: await pass(), unchanged: await pass() };
  } finally {
    await appPool.end();
    await queuePool.end();
    await database.drop();
  }
}

async function benchIngest(options: { files: number; cli: string }) {
  const run = (args: string[], env: Record<string, string>) => runCli(options.cli, args, env);
  const server = await startServer();
  const machine = await describeMachine(server);
  const database = await createDatabase(server, "ingest");
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-bench-ingest-"));
  try {
    const env = { DATABASE_URL: database.url };
    await run(["migrate"], env);
    writeFileSync(join(dir, "one.md"), "one small file");
    const startup = await run(["ingest", join(dir, "one.md")], env);
    rmSync(join(dir, "one.md"));
    writeFiles(dir, options.files, 1);
    const created = await run(["ingest", dir], env);
    const unchanged = await run(["ingest", dir], env);
    writeFiles(dir, options.files, 2);
    const changed = await run(["ingest", dir], env);
    const inProcess = { perFile: await writeInProcess(server, dir, 1), batched: await writeInProcess(server, dir, 500) };
    return {
      machine,
      inProcess,
      cli: options.cli,
      files: options.files,
      seconds: { oneFile: startup.seconds, created: created.seconds, unchanged: unchanged.seconds, changed: changed.seconds },
      filesPerSecond: {
        created: Math.round(options.files / created.seconds),
        unchanged: Math.round(options.files / unchanged.seconds),
        changed: Math.round(options.files / changed.seconds),
      },
      output: { created: created.stdout, unchanged: unchanged.stdout, changed: changed.stdout },
      settings: "the CLI in a child process (start-up included: see seconds.oneFile), one directory of small markdown files, 40 per subdirectory",
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await database.drop();
    await server.stop();
  }
}

const { values } = parseArgs({
  options: { files: { type: "string", default: "2000" }, cli: { type: "string", default: fileURLToPath(new URL("../bin/pgconverge.js", import.meta.url)) } },
});
console.log(JSON.stringify(await benchIngest({ files: Number(values.files), cli: resolve(values.cli) }), null, 2));
