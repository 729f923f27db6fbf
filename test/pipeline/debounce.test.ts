// Debounce: a burst of edits to one document becomes one chunking pass and one embedding of each
// changed chunk, through the job key (preserve_run_at) that ingest puts on the document's job.
import t from "tap";
import { chunkText, DEFAULT_CHUNKER } from "../../pipeline/chunker.ts";
import { INGEST_DOCUMENT } from "../../pipeline/queries.ts";
import { runtimeEvents, type JobEvent } from "../../src/runtime/events.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { ingest, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";

const section = (topic: string, extra = "") =>
  `# ${topic}\n\n${Array.from({ length: 14 }, (_, i) => `The ${topic} sentence number ${i} talks about ${topic} and nothing else.`).join(" ")}${extra}`;
const documentOf = (edit: string) => [section("lighthouses"), section("tides"), section("harbours", ` ${edit}`)].join("\n\n");

/** Long enough that the 50 edits below (a few ms each) always fall inside it, even on a loaded machine. */
const WINDOW_MS = 15_000;

t.test("50 edits of one document within the window: one ingest, one embedding of each changed chunk", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  await startPipeline(t, db, servers);
  const first = await ingest(db, "/docs/coast.md", documentOf("The first version."));
  await waitConverged(db, servers.qdrant);
  const before = new Set(chunkText(first.id, documentOf("The first version."), DEFAULT_CHUNKER).map((chunk) => chunk.id));
  t.ok(before.size >= 3, `several chunks (${before.size})`);

  const ingests: JobEvent[] = [];
  const onStart = (event: JobEvent) => void (event.task === INGEST_DOCUMENT && ingests.push(event));
  runtimeEvents.on("job:started", onStart);
  t.teardown(() => void runtimeEvents.off("job:started", onStart));
  const embeddedBefore = servers.ollama.embeddedInputs;

  let last = "";
  for (let i = 1; i <= 50; i++) {
    last = documentOf(`Edit number ${i} of the harbour section.`);
    const { change } = await ingest(db, "/docs/coast.md", last, { debounceMs: WINDOW_MS });
    if (change !== "updated") t.fail(`edit ${i} was ${change}`);
  }
  const [job] = await db.query<{ waiting: number }>("select count(*)::int as waiting from graphile_worker.jobs where task_identifier = $1", [INGEST_DOCUMENT]);
  t.equal(job!.waiting, 1, "the burst left one waiting ingest job");
  await waitConverged(db, servers.qdrant, WINDOW_MS + 60_000);

  const after = chunkText(first.id, last, DEFAULT_CHUNKER);
  const changed = after.filter((chunk) => !before.has(chunk.id));
  t.ok(changed.length >= 1 && changed.length < after.length, `only the edited section's chunks changed (${changed.length} of ${after.length})`);
  t.equal(ingests.length, 1, "one ingest_document run for the whole burst");
  t.equal(servers.ollama.embeddedInputs - embeddedBefore, changed.length, "each changed chunk embedded once, the unchanged ones not again");
  const stored = await db.query<{ id: string }>("select id from chunks where document_id = $1 order by chunk_index", [first.id]);
  t.same(stored.map((row) => row.id), after.map((chunk) => chunk.id), "the chunks are those of the last edit");
});
