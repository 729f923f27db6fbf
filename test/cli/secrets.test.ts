// What pgconverge prints must not leak what it was configured with, nor let stored text drive
// the terminal: credentials in URL settings are redacted from every line, stored text is
// printed with its control characters escaped, and the worker prints one JSON object
// per line whatever its clients would print.
import t from "tap";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { runCli } from "../helpers/cli.ts";
import { ingest, pipelineEnv, PIPELINE_TASKS_DIR, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";
import { spawnWorker } from "../helpers/worker.ts";

const SECRET = "s3cret";
// Port 2: nothing listens there, and fetch does not refuse it as a "bad port" (it does 9).
const UNREACHABLE = `http://user:${SECRET}@127.0.0.1:2`;

t.test("credentials in OLLAMA_HOST, QDRANT_URL and DATABASE_URL appear in no output", async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url, OLLAMA_HOST: UNREACHABLE, QDRANT_URL: UNREACHABLE, QDRANT_TIMEOUT_MS: "1000", OLLAMA_TIMEOUT_MS: "1000", RELAY_LEASE_MS: "5000" };

  const search = await runCli(["search", "anything"], { env });
  t.equal(search.code, 1, "search fails: Ollama is unreachable");
  t.match(search.stderr, /Ollama at http:\/\/127\.0\.0\.1:2 is unreachable/, "and says where");

  const reconcile = await runCli(["reconcile"], { env });
  t.equal(reconcile.code, 1, "reconcile fails: Qdrant is unreachable");

  const status = await runCli(["status"], { env: { DATABASE_URL: `postgres://postgres:${SECRET}@127.0.0.1:1/postgres` } });
  t.equal(status.code, 1, "status fails: nothing listens on port 1");

  const config = await runCli(["status"], { env: { ...env, QDRANT_URL: `ftp://user:${SECRET}@127.0.0.1:2` } });
  t.equal(config.code, 2, "a bad URL setting is a configuration error");
  t.match(config.stderr, /QDRANT_URL: .*ftp:\/\/user:\*\*\*@127\.0\.0\.1:2/, "which quotes the value, redacted");

  const worker = spawnWorker(t, db, { ...env, LOG_LEVEL: "info", PGCONVERGE_TASKS_DIR: PIPELINE_TASKS_DIR, RELAY_MAX_BACKOFF_MS: "300" });
  await waitFor("the worker to report both services unreachable", async () =>
    /could not check the embedding model/.test(worker.output()) && /Qdrant unreachable/.test(worker.output()),
  );
  worker.child.kill("SIGTERM");
  await worker.exited;

  for (const [name, output] of Object.entries({ search, reconcile, status, config, worker: { stdout: worker.output(), stderr: "" } })) {
    t.notMatch(`${output.stdout}${output.stderr}`, SECRET, `${name} prints no credential`);
  }
});

t.test("credentials in OLLAMA_HOST and QDRANT_URL are sent as Basic authorization", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const withCredentials = (url: string) => url.replace("http://", `http://user:${SECRET}@`);
  const env = { ...pipelineEnv(db, servers), OLLAMA_HOST: withCredentials(servers.ollama.url), QDRANT_URL: withCredentials(servers.qdrant.url) };
  await startPipeline(t, db, servers);
  await ingest(db, "notes.md", "The lighthouse keeper polishes the brass lantern.");
  await waitConverged(db, servers.qdrant);
  const result = await runCli(["search", "brass lantern", "--json"], { env });
  t.equal(result.code, 0, result.stderr);
  t.equal((JSON.parse(result.stdout) as unknown[]).length, 1);
  const basic = `Basic ${Buffer.from(`user:${SECRET}`).toString("base64")}`;
  t.ok(servers.ollama.authorizations.has(basic), "Ollama got them");
  t.ok(servers.qdrant.authorizations.has(basic), "Qdrant got them");
});

t.test("stored text is printed with its control characters escaped", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const env = pipelineEnv(db, servers);
  const hostile = "Lighthouse \x1b]8;;http://evil\x07click\x1b]8;;\x07 keeper \x1b[2J brass\u202e lantern\x9b";
  await startPipeline(t, db, servers);
  await ingest(db, "evil\x1b[31m.md", hostile);
  await waitConverged(db, servers.qdrant);
  const json = await runCli(["search", "brass lantern keeper", "--json"], { env });
  const [stored] = await db.query<{ content: string }>("select content from chunks");
  t.equal((JSON.parse(json.stdout) as Array<{ content: string }>)[0]?.content, stored!.content, "--json keeps the exact text");
  await db.query("select graphile_worker.add_job($1, '{}', run_at := now() + interval '1 hour')", ["task\x1b[2J"]);
  await db.query(`
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
    values (1, 0, 'effect', '{}', 'permanent', 1, 1, $1, now(), now())`, [`failed on ${hostile}`]);

  const outputs = {
    search: await runCli(["search", "brass lantern keeper"], { env }),
    dlq: await runCli(["dlq", "list"], { env }),
    status: await runCli(["status"], { env }),
    delete: await runCli(["delete", "evil\x1b[31m.md"], { env }),
  };
  for (const [name, output] of Object.entries(outputs)) {
    t.equal(output.code, 0, `${name}: ${output.stderr}`);
    t.notMatch(output.stdout, /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/, `${name} prints no control character`);
  }
  t.match(outputs.search.stdout, "Lighthouse \\x1b]8;;http://evil\\x07click", "search shows the escapes");
  t.match(outputs.dlq.stdout, "keeper \\x1b[2J brass\\u202e lantern", "dlq list too");
  t.match(outputs.status.stdout, "task\\x1b[2J", "status names the task, escaped");
  t.match(outputs.delete.stdout, "evil\\x1b[31m.md", "delete names the source, escaped");
});

t.test("with QDRANT_API_KEY over http, every line the worker prints is JSON", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const worker = spawnWorker(t, db, { ...pipelineEnv(db, servers), QDRANT_API_KEY: "key-1", LOG_LEVEL: "info" });
  await waitFor("the worker to start", async () => /worker started/.test(worker.output()));
  worker.child.kill("SIGTERM");
  await worker.exited;
  // Its log is stdout; nothing else (the Qdrant client's console.warn, say) may print on stderr.
  const lines = worker.output().trim().split("\n");
  for (const line of lines) t.doesNotThrow(() => JSON.parse(line), line);
  t.ok(lines.some((line) => /QDRANT_API_KEY is sent over plain http/.test(line)), "our own warning says so, once");
  t.notMatch(worker.output(), "key-1", "the key itself is never printed");
});
