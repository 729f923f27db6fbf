// The Qdrant behaviour pgconverge relies on, checked against the in-repo test server always,
// and against a real Qdrant when QDRANT_URL points at one. If the two ever disagree, the test
// server is wrong and the other tests prove nothing.
import { randomUUID } from "node:crypto";
import t, { type Test } from "tap";
import { checkQdrantVersion, createQdrantClient, describeQdrantError, olderThan, statusOf, type PointWrites, type QdrantClient } from "../../src/outbox/qdrant.ts";
import { createGrpcPointWrites } from "../../src/outbox/qdrantGrpc.ts";
import { FakeQdrant } from "../servers/qdrant.ts";
import { startQdrantWithGrpc } from "../servers/qdrantGrpc.ts";

async function contract(t: Test, client: QdrantClient) {
  const name = `pgconverge_contract_${randomUUID().slice(0, 8)}`;
  t.teardown(() => client.deleteCollection(name).catch(() => {}));
  const failure = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (error) {
      return { status: statusOf(error), message: describeQdrantError(error) };
    }
    return { status: 200, message: "" };
  };

  t.match(await failure(client.getCollection(name)), { status: 404, message: /^Qdrant 404: Not found: Collection `.*` doesn't exist!$/ });
  t.same(await client.collectionExists(name), { exists: false });
  await client.createCollection(name, { vectors: { size: 4, distance: "Cosine" } });
  t.match(await failure(client.createCollection(name, { vectors: { size: 4, distance: "Cosine" } })), { status: 409, message: /already exists/ });
  const info = await client.getCollection(name);
  t.match(info.config.params.vectors, { size: 4, distance: "Cosine" });

  const ids = Array.from({ length: 5 }, () => randomUUID());
  await client.upsert(name, { wait: true, points: ids.map((id, i) => ({ id, vector: [1, i, 0, 0.5], payload: { content_sha256: `h${i}`, chunk_index: i } })) });
  t.match(await failure(client.upsert(name, { wait: true, points: [{ id: randomUUID(), vector: [1, 2, 3], payload: {} }] })), {
    status: 400,
    message: /Vector dimension error: expected dim: 4, got 3/,
  });
  t.match(await failure(client.upsert(name, { wait: true, points: [{ id: "not-a-uuid", vector: [1, 2, 3, 4], payload: {} }] })), { status: 400 });
  t.equal((await client.count(name, { exact: true })).count, 5, "a rejected batch wrote nothing");

  const retrieved = await client.retrieve(name, { ids: [ids[0]!, randomUUID()], with_payload: false, with_vector: false });
  t.same(retrieved.map((point) => point.id), [ids[0]], "retrieve returns only the points that exist");

  const seen: string[] = [];
  let offset: string | number | undefined | null;
  do {
    const page = await client.scroll(name, { limit: 2, ...(offset ? { offset } : {}), with_payload: ["content_sha256"], with_vector: false });
    for (const point of page.points) {
      seen.push(String(point.id));
      t.same(Object.keys(point.payload ?? {}), ["content_sha256"], "only the requested payload field");
    }
    offset = page.next_page_offset as string | number | null | undefined;
  } while (offset);
  t.same([...seen].sort(), [...ids].sort(), "scroll pages through every point once");

  await client.delete(name, { wait: true, points: [ids[0]!, randomUUID()] });
  t.equal((await client.count(name, { exact: true })).count, 4, "deleting an absent id is not an error");

  // Owners: a keyword payload index, then scroll and count filtered by the owner key.
  t.match(await client.createPayloadIndex(name, { field_name: "pgconverge_owner", field_schema: "keyword", wait: true }), { status: "completed" });
  t.match(await client.createPayloadIndex(name, { field_name: "pgconverge_owner", field_schema: "keyword", wait: true }), { status: "completed" }, "creating it again is not an error");
  t.match((await client.getCollection(name)).payload_schema, { pgconverge_owner: { data_type: "keyword" } });
  const [mine, theirs] = [randomUUID(), randomUUID()];
  await client.upsert(name, {
    wait: true,
    points: [
      ...Array.from({ length: 3 }, (_, i) => ({ id: i + 1, vector: [1, 0, 0, i], payload: { pgconverge_owner: mine, pgconverge_hash: `m${i}` } })),
      { id: 10, vector: [0, 1, 0, 0], payload: { pgconverge_owner: theirs } },
      { id: 11, vector: [0, 1, 0, 1], payload: { pgconverge_owner: null } },
    ],
  });
  const ours = { must: [{ key: "pgconverge_owner", match: { value: mine } }] };
  t.equal((await client.count(name, { exact: true, filter: ours })).count, 3);
  const unowned = { must: [{ is_empty: { key: "pgconverge_owner" } }] };
  t.equal((await client.count(name, { exact: true, filter: unowned })).count, 5, "is_empty: key absent or null");
  const owned: Array<string | number> = [];
  offset = undefined;
  do {
    const page = await client.scroll(name, { limit: 2, filter: ours, ...(offset ? { offset } : {}), with_payload: true, with_vector: false });
    for (const point of page.points) {
      owned.push(point.id);
      t.equal(point.payload?.pgconverge_owner, mine);
    }
    offset = page.next_page_offset as string | number | null | undefined;
  } while (offset);
  t.same(owned.sort(), [1, 2, 3], "a filtered scroll pages through the matching points only, integer ids as numbers");
  const fetched = await client.retrieve(name, { ids: [1, 10], with_payload: ["pgconverge_owner"], with_vector: false });
  t.same(fetched.map((point) => [point.id, point.payload?.pgconverge_owner]).sort(), [[1, mine], [10, theirs]]);
  t.match(await failure(client.createPayloadIndex(name, { field_name: "x", field_schema: "nonsense" as "keyword" })), { status: 400 });

  // Conditional updates (Qdrant 1.16), with the filter the relay sends (olderThan): an existing
  // point is replaced only if it matches update_filter; a missing point is inserted whatever it says.
  t.match(await client.versionInfo(), { title: /qdrant/, version: /^\d+\.\d+\.\d+/ }, "GET / names the version, without the envelope");
  await checkQdrantVersion(client);
  t.match(await client.createPayloadIndex(name, { field_name: "pgconverge_version", field_schema: "integer", wait: true }), { status: "completed" });
  const [older, newer, equal, unstamped, foreign, absent] = [20, 21, 22, 23, 24, 25];
  await client.upsert(name, {
    wait: true,
    points: [
      { id: older, vector: [1, 0, 0, 0], payload: { pgconverge_owner: mine, pgconverge_version: 5, v: "stored" } },
      { id: newer, vector: [1, 0, 0, 0], payload: { pgconverge_owner: mine, pgconverge_version: 9, v: "stored" } },
      { id: equal, vector: [1, 0, 0, 0], payload: { pgconverge_owner: mine, pgconverge_version: 7, v: "stored" } },
      { id: unstamped, vector: [1, 0, 0, 0], payload: { pgconverge_owner: mine, v: "stored" } },
      { id: foreign, vector: [1, 0, 0, 0], payload: { pgconverge_owner: theirs, pgconverge_version: 100, v: "stored" } },
    ],
  });
  const writes = [older, newer, equal, unstamped, foreign, absent].map((id) => ({ id, stamp: 7 }));
  await client.upsert(name, {
    wait: true,
    ordering: "medium",
    update_filter: olderThan(mine, writes),
    points: writes.map(({ id, stamp }) => ({ id, vector: [0, 1, 0, 0], payload: { pgconverge_owner: mine, pgconverge_version: stamp, v: "written" } })),
  });
  const state = async (ids: number[]) =>
    Object.fromEntries((await client.retrieve(name, { ids, with_payload: ["v"], with_vector: false, consistency: "majority" })).map((point) => [point.id, point.payload?.v]));
  t.same(
    await state([older, newer, equal, unstamped, foreign, absent]),
    { [older]: "written", [newer]: "stored", [equal]: "stored", [unstamped]: "written", [foreign]: "written", [absent]: "written" },
    "update_filter: smaller, missing or foreign stamps are replaced, greater or equal ones kept, absent points inserted",
  );
  // Per-point stamps in one request: each point is judged by its own clause.
  await client.upsert(name, {
    wait: true,
    update_filter: olderThan(mine, [{ id: older, stamp: 8 }, { id: newer, stamp: 10 }]),
    points: [older, newer].map((id) => ({ id, vector: [0, 0, 1, 0], payload: { pgconverge_owner: mine, pgconverge_version: id === older ? 8 : 10, v: "again" } })),
  });
  t.same(await state([older, newer]), { [older]: "again", [newer]: "again" });
  // Guarded deletes: by filter, the ids AND a smaller stamp.
  await client.delete(name, {
    wait: true,
    ordering: "strong",
    filter: { must: [{ has_id: [older, newer] }, olderThan(mine, [{ id: older, stamp: 9 }, { id: newer, stamp: 9 }])] },
  });
  t.same(await state([older, newer]), { [newer]: "again" }, "a delete removes only the points with a smaller stamp");
  t.match(await failure(client.upsert(name, { wait: true, ordering: "sideways" as "weak", points: [{ id: 30, vector: [0, 0, 0, 1], payload: {} }] })), { status: 400 });
  t.match(await failure(client.scroll(name, { limit: 1, consistency: "most" as "all" })), { status: 400 });
  t.equal((await client.scroll(name, { limit: 100, consistency: "all", with_payload: false })).points.some((point) => point.id === 30), false, "the refused write wrote nothing");
}

/** The relay's writes over gRPC, read back over REST: what they store, refuse and leave alone. */
async function grpcWritesContract(t: Test, client: QdrantClient, points: PointWrites) {
  const name = `pgconverge_contract_grpc_${randomUUID().slice(0, 8)}`;
  t.teardown(() => client.deleteCollection(name).catch(() => {}));
  await client.createCollection(name, { vectors: { size: 4, distance: "Dot" } });
  await client.createPayloadIndex(name, { field_name: "pgconverge_version", field_schema: "integer", wait: true });
  const [mine, uuid] = [randomUUID(), randomUUID()];
  const payload = { pgconverge_owner: mine, pgconverge_version: 5, integer: 3, double: 1.5, text: "x", flag: true, list: [1, "a"], object: { key: null } };
  const write = (id: string | number, stamp: number, vector: number[]) =>
    points.upsert(name, { wait: true, ordering: "medium", points: [{ id, vector, payload: { ...payload, pgconverge_version: stamp } }], update_filter: olderThan(mine, [{ id, stamp }]) });
  await write(1, 5, [0.25, 0.5, 0, -1]);
  await write(uuid, 5, [1, 0, 0, 0]);
  const stored = await client.retrieve(name, { ids: [1, uuid], with_payload: true, with_vector: true });
  t.same(
    Object.fromEntries(stored.map((point) => [`${typeof point.id} ${point.id}`, [point.vector, point.payload]])),
    { "number 1": [[0.25, 0.5, 0, -1], payload], [`string ${uuid}`]: [[1, 0, 0, 0], payload] },
    "integer and UUID ids, the vector, and every JSON payload type as written",
  );
  await write(1, 4, [0, 0, 0, 0]);
  t.same((await client.retrieve(name, { ids: [1], with_vector: true }))[0]?.vector, [0.25, 0.5, 0, -1], "a smaller stamp does not replace the point");
  await write(1, 6, [0, 0, 1, 0]);
  t.same((await client.retrieve(name, { ids: [1], with_vector: true }))[0]?.vector, [0, 0, 1, 0], "a greater one does");
  const refused = await write(2, 1, [1, 2, 3]).then(() => null, (error: unknown) => ({ status: statusOf(error), message: describeQdrantError(error) }));
  t.match(refused, { status: 400, message: /^Qdrant 400: .*Vector dimension error: expected dim: 4, got 3/ });
  const guardedDelete = (stamp: number) => points.delete(name, { wait: true, ordering: "medium", filter: { must: [{ has_id: [1, uuid] }, olderThan(mine, [{ id: 1, stamp }, { id: uuid, stamp }])] } });
  await guardedDelete(6);
  t.same((await client.retrieve(name, { ids: [1, uuid] })).map((point) => point.id), [1], "a delete removes only the points with a smaller stamp");
  await guardedDelete(7);
  t.same(await client.retrieve(name, { ids: [1, uuid] }), []);
}

t.test("the in-repo Qdrant test server", async (t) => {
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await contract(t, await createQdrantClient({ url: fake.url, timeoutMs: 5_000 }));
});

t.test("a real Qdrant", { skip: process.env.QDRANT_URL ? false : "QDRANT_URL is not set" }, async (t) => {
  await contract(t, await createQdrantClient({ url: process.env.QDRANT_URL!, apiKey: process.env.QDRANT_API_KEY, timeoutMs: 10_000 }));
});

t.test("the in-repo Qdrant test server's gRPC front", async (t) => {
  const { fake, grpc } = await startQdrantWithGrpc(t);
  await grpcWritesContract(t, await createQdrantClient({ url: fake.url, timeoutMs: 5_000 }), await createGrpcPointWrites(grpc.url, { timeoutMs: 5_000 }));
});

t.test("a real Qdrant's gRPC API", { skip: process.env.QDRANT_URL && process.env.QDRANT_GRPC_URL ? false : "QDRANT_URL and QDRANT_GRPC_URL are not set" }, async (t) => {
  const settings = { apiKey: process.env.QDRANT_API_KEY, timeoutMs: 10_000 };
  await grpcWritesContract(t, await createQdrantClient({ url: process.env.QDRANT_URL!, ...settings }), await createGrpcPointWrites(process.env.QDRANT_GRPC_URL!, settings));
});
