// `npm run bench:claim`: what the group-commit claim statement (claimBatch) costs by batch size,
// on a queue with a backlog. For each size: that many jobs locked as a fetch leaves them, then
// the claim run CLAIM_RUNS times (30), each in a transaction rolled back, so every run claims
// the same jobs afresh (each leaves dead index entries behind, as a retried batch would). Prints the statement's round trip (median and p90) and per job. A cost
// per job that grows with the batch says the statement is worse than linear in it.
// CLAIM_SIZES (16,64,128,256,1000), CLAIM_BACKLOG (40000 queued jobs).
import type { Job } from "graphile-worker";
import { sql } from "slonik";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../src/db/pools.ts";
import { createLogger } from "../src/log.ts";
import { claimBatch } from "../src/runtime/graphileJobs.ts";
import { createDatabase, envNumber, percentile, round, startServer } from "./lib.ts";
import { enqueuePgconverge } from "./queue.ts";

const sizes = (process.env.CLAIM_SIZES ?? "16,64,128,256,1000").split(",").map((size) => {
  const value = Number(size);
  if (!Number.isInteger(value) || value < 1) throw new Error(`CLAIM_SIZES: "${size}" is not a positive integer`);
  return value;
});
const runs = envNumber("CLAIM_RUNS", 30);
const backlog = envNumber("CLAIM_BACKLOG", 40_000);
const HOLDER = "bench-claim";

const server = await startServer();
try {
  const database = await createDatabase(server, "claim");
  const queuePool = createQueuePool(database.url, 2);
  const appPool = await createAppPool(database.url, 2, { statementTimeoutMs: 60_000 });
  try {
    await migrate(queuePool, createLogger("silent"));
    const queued = Math.max(backlog, Math.max(...sizes));
    await enqueuePgconverge(queuePool, queued);
    const { rows } = await queuePool.query<{ version: string }>("select current_setting('server_version') as version");
    console.log(`claimBatch on a queue of ${queued} jobs, ${runs} runs per size, Postgres ${rows[0]!.version}${server.embedded ? " (embedded)" : ""}`);
    console.log("jobs  median ms  p90 ms  µs per job (median)");
    for (const size of sizes) {
      // As graphile-worker's fetch leaves them: locked by one holder, an attempt counted.
      await queuePool.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null where locked_by = $1", [HOLDER]);
      await queuePool.query(
        "update graphile_worker._private_jobs set locked_by = $1, locked_at = now(), attempts = 1 where id in (select id from graphile_worker._private_jobs order by id limit $2)",
        [HOLDER, size],
      );
      const jobs = (await queuePool.query<Job>("select * from graphile_worker.jobs where locked_by = $1 order by id", [HOLDER])).rows;
      const times: number[] = [];
      for (let run = 0; run < runs; run++) {
        // On one pooled connection, rolled back by hand: a transaction ended by a throw would
        // make slonik close the connection, and every run would pay a new backend's start-up.
        await appPool.connect(async (connection) => {
          await connection.query(sql.unsafe`start transaction`);
          const started = performance.now();
          const claims = await claimBatch(connection, jobs, 60_000);
          times.push(performance.now() - started);
          await connection.query(sql.unsafe`rollback`);
          if (claims.size !== jobs.length) throw new Error(`bench: claimed ${claims.size} of ${jobs.length} jobs`);
        });
      }
      times.sort((a, b) => a - b);
      const median = percentile(times, 50);
      console.log(`${String(size).padStart(4)}  ${round(median, 2).toFixed(2).padStart(9)}  ${round(percentile(times, 90), 2).toFixed(2).padStart(6)}  ${round((median * 1000) / size, 1)}`);
    }
  } finally {
    await appPool.end();
    await queuePool.end();
    await database.drop();
  }
} finally {
  await server.stop();
}
