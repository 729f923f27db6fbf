// Invariant 3, as a property: whatever the interleaving of writes to overlapping keys, however
// many relays race and whatever Qdrant does meanwhile, once the outbox drains Qdrant equals Postgres.
import { randomUUID } from "node:crypto";
import t, { type Test } from "tap";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { COLLECTION, DIMENSIONS, deleteChunk, insertDocument, pendingOutbox, postgresPoints, putChunk, qdrantPoints, relayFor, vectorFor } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer, throughPooler } from "../helpers/pgbouncer.ts";
import { FakeQdrant } from "../servers/qdrant.ts";
import { seededRandom } from "../helpers/random.ts";

const CASES = Number(process.env.CONVERGENCE_CASES ?? 30);
/** Through the pooler, fewer: the suite runs on two cores. */
const POOLED_CASES = Number(process.env.CONVERGENCE_CASES ?? 6);
const KEYS = 12;
const OPS_PER_CASE = 120;
const WRITERS = 4;
const RELAYS = 3;

/** How the writers and relays reach the database: the relays' LISTEN URL (null: polling only) per relay. */
interface Connection {
  cases: number;
  connect(t: Test, direct: TestDatabase): Promise<{ db: TestDatabase; listenUrl(relay: number): string | null }>;
}

t.test(`${CASES} random cases of racing writers, relays and Qdrant faults converge exactly`, (t) =>
  convergeRandomCases(t, { cases: CASES, connect: async (_t, direct) => ({ db: direct, listenUrl: () => direct.url }) }),
);

t.test("the same through a transaction-mode PgBouncer: writers and relays converge exactly", { skip: SKIP_WITHOUT_PGBOUNCER }, (t) =>
  convergeRandomCases(t, {
    cases: POOLED_CASES,
    connect: async (t, direct) => ({
      // Fewer server connections than the writers and relays would open: they queue in the pooler.
      db: await throughPooler(t, direct, await startPgBouncer(t, direct.url, { poolSize: 6 }), 8),
      // One relay LISTENs on a direct connection; the others poll.
      listenUrl: (relay) => (relay === 0 ? direct.url : null),
    }),
  }),
);

async function convergeRandomCases(t: Test, connection: Connection): Promise<void> {
  const CASES = connection.cases;
  const { db, listenUrl } = await connection.connect(t, await createTestDatabase(t, { concurrency: 8 }));
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const client = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  const baseSeed = Number(process.env.CONVERGENCE_SEED ?? Date.now() % 1_000_000);
  let faultsInjected = 0;

  for (let caseNo = 0; caseNo < CASES; caseNo++) {
    const seed = baseSeed + caseNo;
    const random = seededRandom(seed);
    await db.query("truncate documents, chunks, outbox");
    fake.collections.delete(COLLECTION);
    await ensureCollection(client, { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
    const documentId = await insertDocument(db);
    const keys = Array.from({ length: KEYS }, () => randomUUID());

    fake.faults.setRandom({
      rate: 0.3,
      faults: [
        { kind: "status", status: 503 },
        { kind: "status", status: 429, retryAfterSeconds: 0 },
        { kind: "status", status: 500 },
        { kind: "reset" },
        { kind: "delay", ms: 40 },
      ],
    });
    const relays = await Promise.all(
      Array.from({ length: RELAYS }, (_, relay) =>
        relayFor(db, fake, { batchSize: 1 + Math.floor(random() * 20), maxBackoffMs: 50, pollIntervalMs: 100, listenUrl: listenUrl(relay) }),
      ),
    );
    t.teardown(() => Promise.all(relays.map((relay) => relay.stop())));
    await Promise.all(relays.map((relay) => relay.start()));
    const writers = Array.from({ length: WRITERS }, async () => {
      for (let op = 0; op < OPS_PER_CASE / WRITERS; op++) {
        const index = Math.floor(random() * keys.length);
        const key = keys[index]!;
        if (random() < 0.3) await deleteChunk(db, key);
        else {
          const content = `seed ${seed} op ${op} ${random()}`;
          await putChunk(db, documentId, key, content, vectorFor(content), index);
        }
        if (random() < 0.2) await new Promise((resolve) => setTimeout(resolve, random() * 10));
      }
    });
    await Promise.all(writers);
    // Faults stop; every pending change must now drain without help.
    faultsInjected += fake.faults.injected;
    fake.faults.clear();
    fake.faults.injected = 0;
    await waitFor(`case seed ${seed} to drain`, async () => (await pendingOutbox(db)) === 0, { timeoutMs: 30_000 });
    await Promise.all(relays.map((relay) => relay.stop()));

    const expected = await postgresPoints(db);
    const actual = qdrantPoints(fake);
    if (JSON.stringify([...actual].sort()) !== JSON.stringify([...expected].sort())) {
      t.fail(`seed ${seed}: Qdrant differs from Postgres (replay with CONVERGENCE_SEED=${seed} CONVERGENCE_CASES=1)`, {
        expected: [...expected],
        actual: [...actual],
      });
      return;
    }
    const dead = await db.query("select point_id, last_error from outbox where state = 'dead'");
    if (dead.length > 0) {
      t.fail(`seed ${seed}: transient faults left dead changes`, { dead });
      return;
    }
  }
  t.pass(`${CASES} cases (seeds ${baseSeed}..${baseSeed + CASES - 1}), ${CASES * OPS_PER_CASE} writes, ${faultsInjected} injected faults: Qdrant equal to Postgres each time`);
  t.ok(faultsInjected > CASES, "faults really were injected");
}
