// What a batch of vectors costs the relay on its way through (128 points x 768 floats, the
// body of one upsert): reading a real[] column's text as pg does, and printing the JSON body,
// by where the numbers come from and how they are printed; and the same batch as the gRPC
// message the relay sends with QDRANT_GRPC_URL (packed float32), encoded and decoded.
//   node --import tsx bench/vectorJson.ts
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { UpsertPointsSchema } from "@qdrant/js-client-grpc";
import pgTypes from "pg-types";
import { float32Vector } from "../src/outbox/qdrant.ts";

const POINTS = 128;
const DIMENSIONS = 768;
const ROUNDS = 30;

const batch = (make: () => number) => Array.from({ length: POINTS }, () => ({ id: crypto.randomUUID(), vector: Array.from({ length: DIMENSIONS }, make), payload: { stamp: 1 } }));
// What the relay gets from a real[] column: Postgres prints float4 at its shortest, pg parses the text.
function shortest(value: number): number {
  const single = Math.fround(value);
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(single.toPrecision(digits));
    if (Math.fround(candidate) === single) return candidate;
  }
  return single;
}
const fromPostgres = batch(() => shortest(Math.random() * 2 - 1));
// What an embedding model's client hands over: doubles (or float32 values widened to doubles).
const doubles = batch(() => Math.random() * 2 - 1);
const float32Exact = batch(() => Math.fround(Math.random() * 2 - 1));

function time(name: string, run: () => string | Uint8Array): void {
  let bytes = 0;
  run();
  const started = performance.now();
  for (let round = 0; round < ROUNDS; round++) bytes = run().length;
  const ms = (performance.now() - started) / ROUNDS;
  console.log(`${name.padEnd(64)} ${ms.toFixed(2).padStart(7)} ms/batch  ${(bytes / 1024).toFixed(0).padStart(5)} KiB  ${Math.round((POINTS * DIMENSIONS) / ms / 1000)} M floats/s`);
}
const replacer = (_key: string, value: unknown) => (typeof value === "bigint" ? String(value) : value);
const rounded = (points: typeof doubles) => points.map((point) => ({ ...point, vector: float32Vector(point.vector) }));

// How a real[] column reaches the sync: Postgres's text for the array, parsed by pg.
const parseFloat4Array = (pgTypes.getTypeParser as (oid: number, format: "text") => unknown)(1021, "text") as (text: string) => number[];
const arrayTexts = fromPostgres.map((point) => `{${point.vector.join(",")}}`);
time("pg's text parser for real[] (what a sync's load pays)", () => String(arrayTexts.map(parseFloat4Array).length));
time("JSON.parse of the same text as a JSON array", () => String(arrayTexts.map((text) => JSON.parse(`[${text.slice(1, -1)}]`) as number[]).length));
time("JSON.stringify, values from a real[] column", () => JSON.stringify({ points: fromPostgres }));
time("JSON.stringify with a replacer (the client on Node >= 22)", () => JSON.stringify({ points: fromPostgres }, replacer));
time("JSON.stringify, doubles", () => JSON.stringify({ points: doubles }));
time("JSON.stringify, float32 values as doubles", () => JSON.stringify({ points: float32Exact }));
time("float32Vector + JSON.stringify, values from a real[] column", () => JSON.stringify({ points: rounded(fromPostgres) }));
time("float32Vector + JSON.stringify, doubles", () => JSON.stringify({ points: rounded(doubles) }));
time("float32Vector + JSON.stringify, float32 values as doubles", () => JSON.stringify({ points: rounded(float32Exact) }));

// Over gRPC: the message built and encoded (the relay), then decoded (the server).
const upsertPoints = (points: typeof doubles) =>
  toBinary(
    UpsertPointsSchema,
    create(UpsertPointsSchema, {
      collectionName: "bench",
      points: points.map((point) => ({
        id: { pointIdOptions: { case: "uuid" as const, value: point.id } },
        vectors: { vectorsOptions: { case: "vector" as const, value: { vector: { case: "dense" as const, value: { data: point.vector } } } } },
        payload: { stamp: { kind: { case: "integerValue" as const, value: BigInt(point.payload.stamp) } } },
      })),
    }),
  );
time("gRPC: UpsertPoints built and encoded (protobuf-es), doubles", () => upsertPoints(doubles));
const encoded = upsertPoints(doubles);
time("gRPC: the same message decoded (the server's side)", () => (fromBinary(UpsertPointsSchema, encoded), encoded));
