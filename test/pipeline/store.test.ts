// Storing ingest batches: one document the database refuses does not take its batch down, and
// concurrent ingests of overlapping sets neither deadlock nor lose a document.
import { createHash, randomBytes } from "node:crypto";
import t from "tap";
import { storeDocuments } from "../../pipeline/store.ts";
import { createAppPool } from "../../src/db/pools.ts";
import { createTestDatabase } from "../helpers/db.ts";

const documentOf = (source: string, content: string) => ({ source, content, contentSha256: createHash("sha256").update(content).digest("hex") });

t.test("a document the database refuses is reported with its reason; the rest of its batch is stored with their jobs", async (t) => {
  const db = await createTestDatabase(t);
  // Too long for the unique index on documents.source (Postgres: index row size exceeds the maximum).
  const tooLong = `/notes/${randomBytes(2_000).toString("hex")}.md`;
  const batch = [documentOf("/notes/a.md", "alpha"), documentOf(tooLong, "beta"), documentOf("/notes/c.md", "gamma")];
  const results = await storeDocuments(db.appPool, batch);
  t.same(results.map((result) => [result.source, result.ok]), [["/notes/a.md", true], [tooLong, false], ["/notes/c.md", true]], "results in input order");
  const refused = results[1]!;
  t.match(!refused.ok && refused.reason, /index row size/, "the reason is the database's");
  t.notMatch(!refused.ok && refused.reason, /\n/, "in one line");
  t.same((await db.query("select source from documents order by source")).map((row) => row.source), ["/notes/a.md", "/notes/c.md"]);
  t.equal((await db.query("select 1 from graphile_worker.jobs where task_identifier = 'ingest_document'")).length, 2, "each stored document has its job, the refused one none");
});

t.test("two concurrent ingests of overlapping sets, in opposite orders, both complete: no deadlock, every document once", async (t) => {
  const db = await createTestDatabase(t);
  // Its own pool: closing it makes its sessions report their statistics (deadlocks) at exit.
  const pool = await createAppPool(db.url, 4, { statementTimeoutMs: 30_000 });
  const sources = Array.from({ length: 3_000 }, (_, index) => `/docs/${String(index).padStart(4, "0")}.md`);
  for (let round = 0; round < 6; round++) {
    // Every round changes every document, so both ingests write (and lock) every row they share.
    const first = sources.slice(0, 2_000).map((source) => documentOf(source, `${source} round ${round} from the first`));
    const second = sources.slice(1_000).reverse().map((source) => documentOf(source, `${source} round ${round} from the second`));
    const [a, b] = await Promise.all([storeDocuments(pool, first), storeDocuments(pool, second)]);
    t.ok([...a, ...b].every((result) => result.ok), `round ${round}: every document stored`);
  }
  await pool.end();
  const [stats] = await db.query<{ deadlocks: number }>("select deadlocks::int from pg_stat_database where datname = current_database()");
  t.equal(stats!.deadlocks, 0, "the server saw no deadlock (rows and job keys are locked in one order)");
  const [counts] = await db.query<{ documents: number; jobs: number }>(`
    select (select count(*)::int from documents) as documents,
      (select count(*)::int from graphile_worker.jobs where task_identifier = 'ingest_document') as jobs
  `);
  t.same(counts, { documents: 3_000, jobs: 3_000 }, "each document once, with one pending job");
});

t.test("a batch that loses a race (serialization failure, deadlock) is run again and stored once", async (t) => {
  const db = await createTestDatabase(t);
  // The first two attempts fail as a lost race would; a sequence counts them outside the rolled-back transactions.
  await db.query(`
    create sequence test_attempts;
    create function test_lose_race() returns trigger language plpgsql as $$
      begin
        if nextval('test_attempts') = 1 then raise exception 'could not serialize access' using errcode = '40001'; end if;
        if currval('test_attempts') = 2 then raise exception 'deadlock detected' using errcode = '40P01'; end if;
        return new;
      end $$;
    create trigger test_lose_race before insert on documents for each statement execute function test_lose_race();
  `);
  const results = await storeDocuments(db.appPool, [documentOf("/a.md", "alpha"), documentOf("/b.md", "beta")]);
  t.ok(results.every((result) => result.ok), "stored");
  t.equal((await db.query<{ n: number }>("select last_value::int as n from test_attempts"))[0]!.n, 3, "on the third attempt");
  t.equal((await db.query("select 1 from documents")).length, 2);
});
