// `pgconverge outbox retry` names the ids that are not dead changes, as `dlq retry` does.
import { randomUUID } from "node:crypto";
import t from "tap";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase } from "../helpers/db.ts";

t.test("outbox retry of an unknown id: one line naming it, exit 1; the known one is retried", async (t) => {
  const db = await createTestDatabase(t);
  const [dead] = await db.query<{ id: string }>(
    "insert into outbox (collection, point_id, state, last_error, dead_at) values ('chunks', $1, 'dead', 'Bad Request', now()) returning id",
    [randomUUID()],
  );
  const result = await runCli(["outbox", "retry", dead!.id, "987654321"], { env: { DATABASE_URL: db.url } });
  t.equal(result.code, 1);
  t.equal(result.stderr, "pgconverge: no dead outbox change 987654321 (never existed, not dead, or already retried)\n");
  t.equal(result.stdout, "1 dead change put back in line for the relay\n");
  t.same(await db.query("select state from outbox"), [{ state: "pending" }]);

  const again = await runCli(["outbox", "retry", dead!.id], { env: { DATABASE_URL: db.url } });
  t.equal(again.code, 1, "a change no longer dead is named too");
  t.equal(again.stderr, `pgconverge: no dead outbox change ${dead!.id} (never existed, not dead, or already retried)\n`);
  t.equal(again.stdout, "");
});
