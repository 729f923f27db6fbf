import t from "tap";
import { float32Vector } from "../../src/outbox/qdrant.ts";

/** The shortest decimal that reads back as the same float32, the slow and obvious way. */
function shortest(value: number): number {
  const single = Math.fround(value);
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(single.toPrecision(digits));
    if (Math.fround(candidate) === single) return candidate;
  }
  return single;
}

t.test("vectors go on the wire at float32 precision: the shortest decimal of each float32", async (t) => {
  t.same(float32Vector([Math.fround(0.1), Math.fround(-0.7), 1 / 3, 0, 1e-7, 123456789.5]), [0.1, -0.7, 0.33333334, 0, 1e-7, 123456790]);
  t.equal(JSON.stringify(float32Vector([Math.fround(0.1)])), "[0.1]", "not 0.10000000149011612");

  const values = Array.from({ length: 20_000 }, (_, i) => (Math.random() - 0.5) * 10 ** ((i % 40) - 20));
  const printed = float32Vector(values);
  const wrong = values.filter((value, i) => Math.fround(printed[i]!) !== Math.fround(value));
  t.same(wrong, [], "every value reads back as its float32");
  const longer = values.filter((value, i) => String(printed[i]).length > String(shortest(value)).length);
  // A double that is already a decimal of at most 9 digits is kept; such a value can be one
  // digit longer than its float32's shortest.
  t.ok(longer.length <= values.length / 1000, `at most 0.1% longer than the shortest (${longer.length})`);
});

t.test("values from a real[] column (Postgres prints float4 at its shortest) come back unchanged", async (t) => {
  const fromPostgres = Array.from({ length: 5_000 }, () => shortest(Math.random() * 2 - 1));
  t.same(float32Vector(fromPostgres), fromPostgres);
  t.same(float32Vector([NaN, Infinity]), [NaN, Infinity], "what Qdrant will refuse is left for it to refuse");
});
