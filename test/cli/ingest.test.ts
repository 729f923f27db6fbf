import { fileURLToPath } from "node:url";
// `pgconverge ingest`, `delete` and `search` as a user runs them: a folder mixing good and bad
// files, one line per rejection, a summary, the good files searchable once the worker ran.
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import type { SearchHit } from "../../pipeline/search.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { pipelineEnv, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";

const GOOD = {
  "guide.md": "# Guide\n\nThe lighthouse keeper polishes the brass lantern every evening.\n\nStorms bring ships close to the rocks.",
  "notes/recipe.txt": "Knead the sourdough, let it rise overnight, then bake it in a cast iron pot.",
  "notes/deep/space.markdown": "The probe slingshots around Jupiter before it reaches the outer moons.",
};

const BAD: Record<string, [Buffer | string, RegExp]> = {
  "empty.md": ["", /empty file/],
  "blank.txt": ["  \n\n  ", /empty \(only whitespace\)/],
  "photo.txt": [Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0x0d]), randomBytes(3000)]), /binary file, not text/],
  "nul.md": ["before\0after", /contains a NUL byte at offset 6/],
  "nul-later.md": [`${"a long line of ordinary text ".repeat(20)}\0 and more text`, /contains a NUL byte at offset 580/],
  "latin1.txt": [Buffer.from([0x63, 0x61, 0x66, 0xe9]), /not valid UTF-8/],
  "huge.md": ["word ".repeat(1000), /5,000 bytes is over INGEST_MAX_BYTES \(4,000\)/],
};

t.test("a folder of good and bad files: bad ones rejected one line each, good ones searchable", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const env = { ...pipelineEnv(db, servers), INGEST_MAX_BYTES: "4000" };
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-ingest-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "notes", "deep"), { recursive: true });
  for (const [name, content] of Object.entries(GOOD)) writeFileSync(join(dir, name), content);
  for (const [name, [content]] of Object.entries(BAD)) writeFileSync(join(dir, name), content);
  writeFileSync(join(dir, "diagram.png"), randomBytes(100));

  const first = await runCli(["ingest", dir, join(dir, "missing.md")], { env });
  t.equal(first.code, 1, "a rejected file makes the exit code non-zero");
  t.equal(first.stdout, "ingested 3 (3 new, 0 changed), unchanged 0, rejected 8\n");
  const lines = first.stderr.trim().split("\n");
  t.equal(lines.length, 8, "one line per rejected file, nothing else");
  for (const [name, [, reason]] of Object.entries(BAD)) {
    const line = lines.find((l) => l.startsWith(`rejected ${join(dir, name)}: `));
    t.match(line, reason, name);
  }
  t.ok(lines.includes(`rejected ${join(dir, "missing.md")}: no such file or directory`));
  t.equal((await db.query("select 1 from documents")).length, 3, "only the good files were stored");

  const jobsBefore = await db.query("select id from graphile_worker.jobs order by id");
  const again = await runCli(["ingest", join(dir, "guide.md")], { env });
  t.same([again.code, again.stdout], [0, "ingested 0 (0 new, 0 changed), unchanged 1, rejected 0\n"], "unchanged content is a no-op");
  // Not even a row lock: a lock would have stamped the row's xmax.
  t.same(await db.query("select xmax::text from documents where xmax::text <> '0'"), [], "unchanged documents are not written");
  t.same(await db.query("select id from graphile_worker.jobs order by id"), jobsBefore, "and no job is queued for them");

  const piped = await runCli(["ingest", "-", "--source", "clipboard"], { env, input: "The violinist tunes the cello strings before the concert." });
  t.same([piped.code, piped.stdout], [0, "ingested 1 (1 new, 0 changed), unchanged 0, rejected 0\n"], "stdin, named by --source");

  await startPipeline(t, db, servers);
  await waitConverged(db, servers.qdrant);
  const expectations: Array<[string, string]> = [
    ["brass lantern lighthouse", join(dir, "guide.md")],
    ["sourdough cast iron pot", join(dir, "notes/recipe.txt")],
    ["probe around Jupiter", join(dir, "notes/deep/space.markdown")],
    ["cello strings concert", "clipboard"],
  ];
  for (const [query, source] of expectations) {
    const result = await runCli(["search", query, "--json", "--limit", "2"], { env });
    t.equal(result.code, 0, result.stderr);
    const hits = JSON.parse(result.stdout) as SearchHit[];
    t.equal(hits[0]?.source, source, `"${query}" finds ${source} first`);
    t.same(Object.keys(hits[0] ?? {}).sort(), ["chunkIndex", "content", "documentId", "score", "source"]);
  }
  const human = await runCli(["search", "brass", "lantern", "lighthouse"], { env });
  t.match(human.stdout, /^1\. \d\.\d{3} {2}.*guide\.md {2}\(chunk 0\)\n {3}# Guide The lighthouse keeper/, "words of the query are joined");

  // Delete by a path relative to the current directory, and by id.
  // The repository's config file declares the pipeline's commands; this directory has none.
  const config = fileURLToPath(new URL("../../pgconverge.config.ts", import.meta.url));
  const byPath = await runCli(["--config", config, "delete", "guide.md"], { env, cwd: dir });
  t.equal(byPath.code, 0, byPath.stderr);
  t.match(byPath.stdout, new RegExp(`^deleted [0-9a-f-]{36} ${join(dir, "guide.md")}\n$`));
  const [clipboard] = await db.query<{ id: string }>("select id from documents where source = 'clipboard'");
  t.equal((await runCli(["delete", clipboard!.id], { env })).code, 0);
  const missing = await runCli(["delete", "no/such/doc.md"], { env });
  t.same([missing.code, missing.stderr], [1, 'pgconverge: no document with id or source "no/such/doc.md"\n']);
  await waitConverged(db, servers.qdrant);
  const gone = JSON.parse((await runCli(["search", "brass lantern lighthouse", "--json"], { env })).stdout) as SearchHit[];
  t.notOk(gone.some((hit) => hit.source.endsWith("guide.md") || hit.source === "clipboard"), "deleted documents are no longer found");
  t.equal(gone.length, 2, "the other documents still are");
});

t.test("ingest, delete and search usage errors exit 2 with one line", async (t) => {
  const env = { DATABASE_URL: "postgres://127.0.0.1:1/none" };
  for (const args of [["ingest"], ["ingest", "a.md", "--source", "x"], ["ingest", "-", "-"], ["delete"], ["search"], ["search", "x", "--limit", "0"]]) {
    const result = await runCli(args, { env });
    t.equal(result.code, 2, `pgconverge ${args.join(" ")}`);
    t.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  }
});

t.test("search when Ollama is down fails with one line", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const env = pipelineEnv(db, servers);
  await servers.ollama.stop();
  const result = await runCli(["search", "anything"], { env });
  t.equal(result.code, 1);
  t.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
});

t.test("the worker refuses an EMBED_DIMENSIONS the model does not produce, in one line", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const result = await runCli(["worker"], { env: { ...pipelineEnv(db, servers), EMBED_DIMENSIONS: "100" } });
  t.equal(result.code, 2);
  t.equal(result.stderr, 'pgconverge: EMBED_DIMENSIONS: model "test-embed" returns 256-dimensional vectors; set EMBED_DIMENSIONS=256 (got "100")\n');
});

t.test("a directory with nothing to ingest says which extensions were looked for", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-empty-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "report.pdf"), "not text");
  mkdirSync(join(dir, "nested"));
  const result = await runCli(["ingest", dir], { env: { DATABASE_URL: "postgres://127.0.0.1:1/none" } });
  t.equal(result.code, 1);
  t.equal(
    result.stderr,
    `rejected ${dir}: no files to ingest: looked for .txt, .text, .md, .markdown, .mdx, .rst (hidden entries skipped; name other files explicitly)\n`,
  );
  t.match(result.stdout, /rejected 1$/m);
});

t.test("more files than one batch holds, and a file named twice: each stored once with one job", async (t) => {
  const db = await createTestDatabase(t);
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-many-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const files = 1_234; // more than two batches
  for (let i = 0; i < files; i++) writeFileSync(join(dir, `note-${String(i).padStart(4, "0")}.md`), `Note ${i} about tides.`);
  const first = join(dir, "note-0000.md");
  const env = { DATABASE_URL: db.url, INGEST_DEBOUNCE_MS: "600000" };
  const result = await runCli(["ingest", first, dir], { env });
  t.equal(result.code, 0, result.stderr);
  t.equal(result.stdout, `ingested ${files} (${files} new, 0 changed), unchanged 1, rejected 0\n`, "the second mention of a file is unchanged");
  const [counts] = await db.query<{ documents: number; jobs: number; keys: number }>(`
    select (select count(*)::int from documents) as documents,
           (select count(*)::int from graphile_worker.jobs where task_identifier = 'ingest_document') as jobs,
           (select count(*)::int from graphile_worker.jobs join documents d on key = 'ingest_document:' || d.id) as keys
  `);
  t.same(counts, { documents: files, jobs: files, keys: files }, "one ingest job per document, keyed by it");
  const [due] = await db.query<{ later: number }>("select count(*)::int as later from graphile_worker.jobs where run_at > now() + interval '500 seconds'");
  t.equal(due!.later, files, "each waits INGEST_DEBOUNCE_MS, so further edits coalesce into it");
  writeFileSync(join(dir, "note-0007.md"), "Note 7, edited.");
  const edited = await runCli(["ingest", dir], { env });
  t.equal(edited.stdout, `ingested 1 (0 new, 1 changed), unchanged ${files - 1}, rejected 0\n`);
});

t.test("a document the database refuses is one line and exit 1; the others of its batch are stored", async (t) => {
  const db = await createTestDatabase(t);
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-refused-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const name of ["a.md", "b.md", "c.md"]) writeFileSync(join(dir, name), `The ${name} note about tides.`);
  // Too long for the unique index on documents.source: read fine, refused by Postgres, in the files' batch.
  const source = `clip-${randomBytes(2_000).toString("hex")}`;
  const result = await runCli(["ingest", dir, "-", "--source", source], { env: { DATABASE_URL: db.url }, input: "Text from stdin." });
  t.equal(result.code, 1, "something failed, and the exit code says so");
  t.equal(result.stdout, "ingested 3 (3 new, 0 changed), unchanged 0, rejected 1\n");
  t.match(result.stderr, new RegExp(`^rejected ${source}: [^\\n]*index row size[^\\n]*\\n$`), "one line naming the document and the reason");
  t.equal((await db.query("select 1 from documents")).length, 3, "the good documents of the batch were stored");
});
