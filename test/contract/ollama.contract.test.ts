// The Ollama behaviour pgconverge relies on, checked against the in-repo test server always,
// and against a real Ollama when OLLAMA_HOST points at one (with EMBED_MODEL pulled, default
// nomic-embed-text). If the two ever disagree, the test server is wrong.
import { Ollama } from "ollama";
import t, { type Test } from "tap";
import { Embedder } from "../../pipeline/embedder.ts";
import { classifyError } from "../../src/runtime/errors.ts";
import { FakeOllama } from "../servers/ollama.ts";

const cosine = (a: number[], b: number[]) => a.reduce((sum, value, i) => sum + value * b[i]!, 0) / (Math.hypot(...a) * Math.hypot(...b));

async function contract(t: Test, host: string, model: string) {
  const version = await new Ollama({ host }).version();
  t.match(version, { version: /^\d+\.\d+\.\d+/ }, "/api/version");
  const tags = await new Ollama({ host }).list();
  t.ok(tags.models.some((m) => m.name.replace(/:latest$/, "") === model.replace(/:latest$/, "")), `/api/tags lists ${model}`);

  const embedder = new Embedder({ host, model, timeoutMs: 120_000, batchSize: 2 });
  const texts = ["the relay drains the postgres outbox", "postgres outbox relay", "bananas are a yellow fruit"];
  const vectors = await embedder.embed(texts);
  t.equal(vectors.length, 3, "one vector per input, across batches");
  const size = vectors[0]!.length;
  t.ok(size > 0 && vectors.every((vector) => vector.length === size && vector.every(Number.isFinite)), `all ${size}-dimensional and finite`);
  t.equal(await embedder.dimensions(), size);
  t.ok(cosine(vectors[0]!, vectors[1]!) > cosine(vectors[0]!, vectors[2]!), "related texts are nearer than unrelated ones");

  const missing = new Embedder({ host, model: "pgconverge-no-such-model", timeoutMs: 30_000, batchSize: 2 });
  const error = await missing.embed(["x"]).then(() => null, (e: unknown) => e as Error);
  t.equal(error?.name, "PermanentError", "a model that is not pulled is permanent");
  t.match(error?.message, /run: ollama pull pgconverge-no-such-model/);
  t.equal(classifyError(error), "permanent");
}

t.test("the in-repo Ollama test server", async (t) => {
  const fake = new FakeOllama();
  await fake.start();
  t.teardown(() => fake.stop());
  await contract(t, fake.url, "nomic-embed-text");
});

t.test("a real Ollama", { skip: process.env.OLLAMA_HOST ? false : "OLLAMA_HOST is not set" }, async (t) => {
  await contract(t, process.env.OLLAMA_HOST!, process.env.EMBED_MODEL ?? "nomic-embed-text");
});
