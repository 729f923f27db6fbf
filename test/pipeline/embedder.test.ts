import { existsSync, readdirSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import t from "tap";
import { Embedder } from "../../pipeline/embedder.ts";
import { classifyError } from "../../src/runtime/errors.ts";
import { FakeOllama } from "../servers/ollama.ts";

async function setup(t: { teardown(fn: () => unknown): void }, settings: Partial<ConstructorParameters<typeof Embedder>[0]> = {}) {
  const fake = new FakeOllama();
  await fake.start();
  t.teardown(() => fake.stop());
  const embedder = new Embedder({ host: fake.url, model: "nomic-embed-text", timeoutMs: 2_000, batchSize: 16, ...settings });
  return { fake, embedder };
}

const cosine = (a: number[], b: number[]) => a.reduce((sum, value, i) => sum + value * b[i]!, 0);
const failure = (promise: Promise<unknown>) => promise.then(() => null, (error: unknown) => error as Error);

t.test("embeds in batches, one vector per input, deterministically", async (t) => {
  const { fake, embedder } = await setup(t);
  const texts = Array.from({ length: 40 }, (_, i) => `text number ${i}`);
  const vectors = await embedder.embed(texts);
  t.equal(vectors.length, 40);
  t.equal(fake.embedCalls, 3, "40 inputs in batches of 16");
  t.ok(vectors.every((vector) => vector.length === 768));
  t.same(await embedder.embed(["text number 3"]), [vectors[3]]);
  t.equal(await embedder.dimensions(), 768);
});

t.test("the test server's embeddings score shared words higher", async (t) => {
  const { embedder } = await setup(t);
  const [query, related, unrelated] = await embedder.embed(["postgres outbox relay", "the relay drains the postgres outbox", "bananas are yellow fruit"]);
  t.ok(cosine(query!, related!) > cosine(query!, unrelated!) + 0.3);
});

t.test("a missing model is permanent and says to pull it", async (t) => {
  const { embedder } = await setup(t, { model: "no-such-model" });
  const error = await failure(embedder.embed(["x"]));
  t.equal(error?.name, "PermanentError");
  t.match(error?.message, /Ollama model "no-such-model" is not available .*; run: ollama pull no-such-model/);
  t.equal(classifyError(error), "permanent");
});

t.test("5xx, resets and refused connections are transient", async (t) => {
  const { fake, embedder } = await setup(t);
  fake.faults.next({ kind: "status", status: 503, message: "server busy" });
  t.equal(classifyError(await failure(embedder.embed(["x"]))), "transient", "503");
  fake.faults.next({ kind: "reset" });
  t.equal(classifyError(await failure(embedder.embed(["x"]))), "transient", "connection reset");
  fake.faults.next({ kind: "status", status: 400, message: "invalid input" });
  t.equal(classifyError(await failure(embedder.embed(["x"]))), "permanent", "400");
  await fake.stop();
  const refused = await failure(embedder.embed(["x"]));
  t.equal(classifyError(refused), "transient", "connection refused");
  t.equal(refused?.message, `Ollama at ${fake.url} is unreachable (ECONNREFUSED)`, "says why, not just 'fetch failed'");
});

t.test("a request past its deadline is aborted, and so is one whose caller gives up", async (t) => {
  const { fake, embedder } = await setup(t, { timeoutMs: 200 });
  fake.faults.next({ kind: "delay", ms: 5_000 });
  let started = Date.now();
  const timedOut = await failure(embedder.embed(["x"]));
  t.ok(Date.now() - started < 2_000, "gave up at the deadline, not after the delay");
  t.match(timedOut?.message, /exceeded its 200 ms deadline/);
  t.equal(classifyError(timedOut), "transient");

  const patient = new Embedder({ ...embedder.settings, timeoutMs: 10_000 });
  fake.faults.next({ kind: "delay", ms: 5_000 });
  const controller = new AbortController();
  started = Date.now();
  setTimeout(() => controller.abort(), 100);
  const aborted = await failure(patient.embed(["x"], controller.signal));
  t.ok(aborted, "rejected");
  t.ok(Date.now() - started < 2_000, "stopped when the caller aborted");

  // A caller's own deadline (the worker's 5 s model check, a task's) is not this request's.
  fake.faults.next({ kind: "delay", ms: 5_000 });
  const callerTimedOut = await failure(patient.embed(["x"], AbortSignal.timeout(100)));
  t.ok(callerTimedOut, "rejected at the caller's deadline");
  t.notMatch(callerTimedOut?.message, /10000 ms/, "not reported as the request's 10000 ms deadline");
  t.equal(classifyError(callerTimedOut), "transient");
});

t.test("an error page that is not JSON (a proxy's 502) fails the call without printing anything", async (t) => {
  const proxy = createServer((_request, response) => {
    response.writeHead(502, { "content-type": "text/html" });
    response.end("<html><body>502 Bad Gateway</body></html>");
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise((resolve) => proxy.close(resolve)));
  const embedder = new Embedder({ host: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, model: "m", timeoutMs: 2_000, batchSize: 16 });
  const printed: unknown[] = [];
  const original = { log: console.log, warn: console.warn, error: console.error };
  console.log = console.warn = console.error = (...args: unknown[]) => void printed.push(args);
  const error = await failure(embedder.embed(["x"])).finally(() => Object.assign(console, original));
  t.match(error?.message, /502 Bad Gateway/, "the page's text is the error");
  t.equal(classifyError(error), "transient", "a 502 is retried");
  t.same(printed, [], "the client printed nothing of its own");
});

t.test("no leaks: open file descriptors stay flat over three thousand embedding calls", { skip: existsSync("/proc/self/fd") ? false : "needs /proc" }, async (t) => {
  const { embedder } = await setup(t, { batchSize: 4 });
  const fds = () => readdirSync("/proc/self/fd").length;
  await embedder.embed(["warm up"]);
  const before = fds();
  for (let i = 0; i < 3_000; i++) await embedder.embed([`call ${i}`, `second ${i}`]);
  const after = fds();
  t.ok(after - before <= 5, `file descriptors: ${before} before, ${after} after 3,000 calls`);
});
