// The whole pipeline as it runs in production: `pgconverge ingest` of a generated corpus, two
// `pgconverge worker` processes (jobs + relay each) against Qdrant and Ollama test servers that
// inject faults, one worker SIGKILLed mid-run. Everything must converge, exactly once, with
// no dead letters from transient faults, and search must find each document by its own words.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { chunkText } from "../../pipeline/chunker.ts";
import type { SearchHit } from "../../pipeline/search.ts";
import { runCli } from "../helpers/cli.ts";
import { generateCorpus } from "../helpers/corpus.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { idleInTransaction } from "../helpers/fixtures.ts";
import { describeDescriptors, descriptorCount, openDescriptors } from "../helpers/descriptors.ts";
import { converged, ingest, pipelineEnv, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";
import { spawnWorker, waitForRegistration } from "../helpers/worker.ts";

const DOCUMENTS = Number(process.env.E2E_DOCUMENTS ?? 300);

t.test(`${DOCUMENTS} documents, faults in Qdrant and Ollama, a worker SIGKILLed mid-run: everything converges`, async (t) => {
  const db = await createTestDatabase(t, { concurrency: 8 });
  const servers = await startServers(t);
  const env = pipelineEnv(db, servers);
  const corpus = generateCorpus(DOCUMENTS, 7);
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-e2e-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const document of corpus) writeFileSync(join(dir, document.name), document.content);

  // Transient faults only: every one of them must end in success, not in a dead letter.
  servers.qdrant.faults.setRandom({ rate: 0.2, faults: [{ kind: "status", status: 503 }, { kind: "reset" }, { kind: "status", status: 429, retryAfterSeconds: 0 }, { kind: "delay", ms: 300 }] });
  servers.ollama.faults.setRandom({ rate: 0.08, faults: [{ kind: "status", status: 503, message: "server busy" }, { kind: "reset" }, { kind: "delay", ms: 300 }] });

  const ingested = await runCli(["ingest", dir], { env });
  t.equal(ingested.stdout, `ingested ${DOCUMENTS} (${DOCUMENTS} new, 0 changed), unchanged 0, rejected 0\n`, ingested.stderr);

  const workers = [spawnWorker(t, db, env), spawnWorker(t, db, env)];
  await Promise.all(workers.map((worker) => waitForRegistration(db, worker.child.pid!)));
  const embeddedAtKill = await waitFor("a third of the documents embedded", async () => {
    const [row] = await db.query<{ documents: number }>("select count(distinct document_id)::int as documents from chunks where embedding is not null");
    return row!.documents >= DOCUMENTS / 3 ? row!.documents : undefined;
  }, { timeoutMs: 60_000 });
  workers[0]!.child.kill("SIGKILL");
  t.comment(`worker killed with ${embeddedAtKill} of ${DOCUMENTS} documents partly embedded`);
  await workers[0]!.exited;

  await waitConverged(db, servers.qdrant, 180_000).catch((error: Error) => {
    throw new Error(`${error.message}\nsurviving worker said:\n${workers[1]!.output()}`);
  });
  servers.qdrant.faults.clear();
  servers.ollama.faults.clear();
  t.ok(servers.qdrant.faults.injected + servers.ollama.faults.injected > 20, `faults injected: Qdrant ${servers.qdrant.faults.injected}, Ollama ${servers.ollama.faults.injected}`);

  const expectedChunks = new Map<string, number>();
  const documents = await db.query<{ id: string; source: string; content: string }>("select id, source, content from documents");
  for (const document of documents) expectedChunks.set(document.id, chunkText(document.id, document.content).length);
  const [counts] = await db.query<{ chunks: number; dead: number; outbox_dead: number }>(`
    select (select count(*)::int from chunks) as chunks,
           (select count(*)::int from dead_letters) as dead,
           (select count(*)::int from outbox where state = 'dead') as outbox_dead`);
  t.equal(documents.length, DOCUMENTS, "every document stored once");
  t.equal(counts!.chunks, [...expectedChunks.values()].reduce((a, b) => a + b, 0), "every chunk stored exactly once");
  t.equal(counts!.dead, 0, "no dead letters from transient faults");
  t.equal(counts!.outbox_dead, 0, "no dead outbox changes from transient faults");
  t.ok(await converged(db, servers.qdrant), "Qdrant equals Postgres");
  t.equal(await idleInTransaction(db), 0, "no session idle in transaction");

  const bySource = new Map(documents.map((document) => [document.source, document.id]));
  for (const index of [0, Math.floor(DOCUMENTS / 2), DOCUMENTS - 1]) {
    const result = await runCli(["search", corpus[index]!.phrase, "--json", "--limit", "3"], { env });
    const hits = JSON.parse(result.stdout) as SearchHit[];
    t.equal(hits[0]?.documentId, bySource.get(join(dir, corpus[index]!.name)), `"${corpus[index]!.phrase}" finds ${corpus[index]!.name} first`);
  }
});

t.test("no leaks while busy: event-loop delay bounded, connections bounded, other descriptors flat", { skip: existsSync("/proc/self/fd") ? false : "needs /proc" }, async (t) => {
  const db = await createTestDatabase(t, { concurrency: 8 });
  const servers = await startServers(t);
  await startPipeline(t, db, servers, { concurrency: 8 });
  // Warm up under the same load, so that pools and keep-alive sockets are at their working size.
  for (const document of generateCorpus(100, 3)) await ingest(db, `/warm-up/${document.name}`, document.content);
  await waitConverged(db, servers.qdrant, 120_000);
  const before = openDescriptors();
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  for (const document of generateCorpus(200, 11)) await ingest(db, `/${document.name}`, document.content);
  await waitConverged(db, servers.qdrant, 120_000);
  delay.disable();
  const after = openDescriptors();
  const p99 = delay.percentile(99) / 1e6;
  const max = delay.max / 1e6;
  t.comment(`event-loop delay while busy: p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms; file descriptors ${descriptorCount(before)} -> ${descriptorCount(after)}; ${servers.ollama.embedCalls} embed calls`);
  // A bound, not a benchmark: a blocked loop (sync I/O, a CPU-bound task) shows up as seconds.
  t.ok(p99 < 250, `event-loop delay p99 ${p99.toFixed(1)} ms is bounded`);
  // Connections to Postgres and to the test servers come and go with the load (pools grow,
  // keep-alive sockets expire), so each kind is bounded by the test's concurrency: at most 8 jobs
  // and the relay's batches are in flight, while a leak of one per job or embedding call would
  // add hundreds. That holds for both ends of a connection to the in-process test servers, and
  // for Unix sockets (DATABASE_URL may name one). Listening sockets and everything else stay put.
  const CONCURRENCY = 8;
  const isConnection = (kind: string) => kind.startsWith("tcp→") || kind.startsWith("tcp accepted") || kind === "unix socket";
  const grown = [...after].map(([kind, count]) => [kind, count - (before.get(kind) ?? 0)] as const).filter(([, growth]) => growth > 0);
  const shown = `before: ${describeDescriptors(before)}; after: ${describeDescriptors(after)}`;
  t.ok(grown.every(([kind, growth]) => !isConnection(kind) || growth <= CONCURRENCY), `connections of each kind grew by at most ${CONCURRENCY} (${shown})`);
  t.ok(grown.filter(([kind]) => kind.startsWith("tcp listening")).length === 0, `no new listening socket (${shown})`);
  const others = grown.filter(([kind]) => !kind.startsWith("tcp") && !isConnection(kind)).reduce((sum, [, growth]) => sum + growth, 0);
  t.ok(others <= 2, `pipes, event descriptors, files and other sockets flat (${shown})`);
});
