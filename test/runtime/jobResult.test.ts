// The cap on what apply returns (JOB_RESULT_MAX_BYTES) is measured in JavaScript the way
// job_history's CHECK measures it in Postgres, so a result is never accepted by one and refused
// by the other (that would fail the whole commit with a constraint error instead of the job).
import t from "tap";
import { JOB_RESULT_MAX_BYTES } from "../../src/runtime/defineTask.ts";
import { PermanentError } from "../../src/runtime/errors.ts";
import { jsonbTextBytes, resultText } from "../../src/runtime/jobResult.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

async function postgresBytes(db: TestDatabase, text: string): Promise<number> {
  const [row] = await db.query<{ n: number }>("select octet_length($1::jsonb::text) as n", [text]);
  return row!.n;
}

function insertResult(db: TestDatabase, text: string) {
  return db.query(
    `insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, result)
     values (1, 0, 'effect', 'applied', 1, now(), $1::jsonb)`,
    [text],
  );
}

/** An object of many small members padded to `target` bytes by the given measure. */
function padded(target: number, measure: (value: unknown) => number): Record<string, unknown> {
  const value: Record<string, unknown> = { pad: "" };
  for (let i = 0; i < 300; i++) value[`k${i}`] = i;
  value.pad = "x".repeat(target - measure(value));
  return value;
}

t.test("the measure of a result is Postgres's, byte for byte", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const values: unknown[] = [
    null, true, false, 0, -0, 7, -12.5, 0.1, 1e21, -1.5e300, 1e-7, 1.25e-9, 123456789.123, Number.MAX_VALUE, Number.MIN_VALUE,
    "", "plain", "quote \" backslash \\ tab \t newline \n bell \u0007 del \u007f", "é 中 😀", "</script>",
    [], {}, [1, [2, [3, {}]]], { a: 1, bb: [true, null], "key with: colon, comma": { nested: "x" } },
    { z: 1, a: 2, m: { y: [1e25, 0.000001, 5e-7] } },
  ];
  for (const value of values) {
    const text = JSON.stringify(value);
    t.equal(jsonbTextBytes(JSON.parse(text)), await postgresBytes(db, text), text.slice(0, 60));
  }
});

t.test("a result at the cap is accepted by both, one byte more is refused by both", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  // Compact JSON of exactly the cap: what the old JavaScript measure let through, while Postgres
  // (", " and ": " between members) measures it hundreds of bytes over and refuses it.
  const compactAtCap = padded(JOB_RESULT_MAX_BYTES, (value) => Buffer.byteLength(JSON.stringify(value)));
  t.equal(Buffer.byteLength(JSON.stringify(compactAtCap)), JOB_RESULT_MAX_BYTES);
  await t.rejects(insertResult(db, JSON.stringify(compactAtCap)), { code: "23514" }, "Postgres refuses it");
  t.throws(() => resultText(compactAtCap), PermanentError, "and so does the task runtime, as a permanent failure");

  const atCap = padded(JOB_RESULT_MAX_BYTES, (value) => jsonbTextBytes(value));
  t.equal(await postgresBytes(db, JSON.stringify(atCap)), JOB_RESULT_MAX_BYTES);
  t.equal(resultText(atCap), JSON.stringify(atCap), "exactly the cap is accepted");
  await insertResult(db, resultText(atCap)!);
  const over = { ...atCap, pad: `${atCap.pad as string}x` };
  t.throws(() => resultText(over), PermanentError);
  await t.rejects(insertResult(db, JSON.stringify(over)), { code: "23514" });
});

t.test("a result Postgres cannot store as jsonb is a permanent failure, not a failed commit", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  for (const value of [{ a: "nul \u0000 here" }, ["lone \ud800 surrogate"], { "\udc00": 1 }]) {
    t.throws(() => resultText(value), PermanentError);
    await t.rejects(insertResult(db, JSON.stringify(value)));
  }
  t.equal(resultText({ ok: "😀" }), '{"ok":"😀"}', "a surrogate pair is a character like any other");
  t.equal(resultText(undefined), null);
});
