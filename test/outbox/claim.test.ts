// The relay's claim (outbox.ts claimStatement): which changes it leases, and that its cost is the
// batch's, not the backlog's.
import { sql } from "slonik";
import t from "tap";
import { claimChanges, claimStatement } from "../../src/outbox/outbox.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { nodesOf, type PlanNode } from "../helpers/plans.ts";

t.test("the earliest due changes of the served collections, none leased, none of another collection", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  await db.query(`
    insert into outbox (collection, point_id, next_attempt_at, leased_by, leased_until) values
      ('a', '101', now() - interval '5 s', null, null),
      ('b', '201', now() - interval '4 s', null, null),
      ('a', '102', now() - interval '3 s', 'relay-x', now() + interval '1 min'),
      ('c', '301', now() - interval '9 s', null, null),
      ('b', '202', now() - interval '2 s', null, null),
      ('a', '103', now() - interval '1 s', null, null),
      ('a', '104', now() + interval '1 min', null, null),
      ('b', '203', now() - interval '6 s', 'relay-x', now() - interval '1 s')
  `);
  const claimed = await claimChanges(db.appPool, "relay-a", ["a", "b"], 3, 60_000);
  t.same(claimed.map((change) => change.point_id).sort(), ["101", "201", "203"], "a lease that ended is claimable; a live lease, a future retry and another relay's collection are not");
  const stamps = claimed.map((change) => change.stamp);
  t.equal(new Set(stamps).size, 3, "each claimed change has a stamp of its own");
  const rest = await claimChanges(db.appPool, "relay-a", ["a", "b"], 10, 60_000);
  t.same(rest.map((change) => change.point_id).sort(), ["103", "202"]);
  t.ok(Math.min(...rest.map((change) => change.stamp)) > Math.max(...stamps), "later claims, greater stamps");
});

t.test("a claim reads its batch from the claim index, whatever the backlog", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  await db.query(`
    insert into outbox (collection, point_id, next_attempt_at)
    select case when n % 4 = 0 then 'b' else 'a' end, n::text, now() - make_interval(secs => n) from generate_series(1, 20000) n;
    analyze outbox;
  `);
  const limit = 128;
  const [plan] = (await db.appPool.oneFirst(sql.unsafe`explain (analyze, format json) ${claimStatement("relay-a", ["a", "b"], limit, 60_000)}`)) as Array<{ Plan: PlanNode }>;
  const scans = nodesOf(plan!.Plan).filter((node) => node["Relation Name"] === "outbox" && node["Node Type"] !== "ModifyTable");
  t.same(scans.filter((node) => node["Node Type"] === "Seq Scan"), [], "no scan of the whole outbox");
  // Rows returned and rows a filter dropped, in every loop: all the rows the scans touched.
  const rowsRead = scans.reduce((sum, node) => sum + (node["Actual Rows"] + (node["Rows Removed by Filter"] ?? 0)) * node["Actual Loops"], 0);
  t.ok(rowsRead <= limit * 3, `rows read from the outbox: ${rowsRead}, a batch per collection (2) and the batch leased, of 20,000 pending`);
  t.equal(plan!.Plan["Actual Rows"], limit, "a full batch leased");
});
