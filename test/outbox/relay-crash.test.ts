// A relay process SIGKILLed mid-batch loses nothing: its leased changes are taken over when the lease ends.
import { randomUUID } from "node:crypto";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import t from "tap";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { COLLECTION, DIMENSIONS, insertDocument, pendingOutbox, postgresPoints, putChunk, qdrantPoints } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

t.test("relay processes SIGKILLed mid-batch: every change still reaches Qdrant, and nothing extra does", async (t) => {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  const documentId = await insertDocument(db);
  const ids = Array.from({ length: 1_000 }, () => randomUUID());
  for (const [index, id] of ids.entries()) await putChunk(db, documentId, id, `text ${id}`, undefined, index);
  // Slow requests, so kills land while batches are in flight (a relay writes several batches at
  // once: at 60 ms a request, two relays drained 400 changes before a third kill).
  fake.faults.setRandom({ rate: 1, faults: [{ kind: "delay", ms: 250 }] });

  const env = {
    ...process.env,
    DATABASE_URL: db.url,
    QDRANT_URL: fake.url,
    QDRANT_COLLECTION: COLLECTION,
    EMBED_DIMENSIONS: String(DIMENSIONS),
    RELAY_BATCH_SIZE: "10",
    QDRANT_TIMEOUT_MS: "1000",
    RELAY_LEASE_MS: "2000",
    RELAY_POLL_INTERVAL_MS: "200",
    LOG_LEVEL: "warn",
  };
  const live = new Set<ReturnType<typeof spawn>>();
  const startRelay = () => {
    const child = spawn(process.execPath, [CLI, "relay"], { env, stdio: "ignore" });
    live.add(child);
    child.on("exit", () => live.delete(child));
    return child;
  };
  t.teardown(() => {
    for (const child of live) child.kill("SIGKILL");
  });
  startRelay();
  startRelay();
  let kills = 0;
  while ((await pendingOutbox(db)) > 0 && kills < 6) {
    await new Promise((resolve) => setTimeout(resolve, 400 + Math.random() * 400));
    const leased = await db.query("select 1 from outbox where leased_by is not null limit 1");
    const victim = [...live][Math.floor(Math.random() * live.size)];
    if (victim && leased.length > 0) {
      victim.kill("SIGKILL");
      kills++;
      startRelay();
    }
  }
  t.ok(kills >= 3, `${kills} relays killed while holding leases`);
  await waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0, { timeoutMs: 60_000 });
  t.same(qdrantPoints(fake), await postgresPoints(db), "Qdrant equals Postgres");
  t.equal((await db.query("select 1 from outbox")).length, 0, "no dead or stuck changes");
  for (const child of live) child.kill("SIGTERM");
});
