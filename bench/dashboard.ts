// The dashboard on a large database, and its screenshots.
//   npm run bench:dashboard   seeds BENCH_HISTORY_ROWS (1000000) history rows over 7 days and
//                             BENCH_QUEUED_JOBS (100000) queued jobs, then times the overview:
//                             server-side (the handler, 5 runs) and in headless Chromium (page load).
//   npm run docs:screenshots  seeds a small, lively database and writes docs/screenshots/*.png.
// On DATABASE_URL when set, else an embedded Postgres; Chromium from CHROMIUM_PATH or /usr/bin/chromium.
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { chromium } from "playwright-core";
import { createDashboard } from "../src/api/dashboard.ts";
import { migrate } from "../src/db/migrate.ts";
import { createLogger } from "../src/log.ts";
import { createDatabase, envNumber, round, startServer } from "./lib.ts";

const screenshots = process.argv.includes("--screenshots");
const SHOTS = fileURLToPath(new URL("../docs/screenshots/", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const AUTH = { user: "ops", password: "screenshots-only-password" };

async function seedLarge(db: pg.Pool, historyRows: number, queuedJobs: number): Promise<void> {
  await db.query(`select pgconverge_job_history_partition((now() at time zone 'UTC')::date - d) from generate_series(1, 7) d`);
  // Newest first: job ids grow with finish time, as they do in a real history.
  await db.query(
    `insert into job_history (finished_at, job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error)
     select now() - i * ($1::float8 / $2) * interval '1 second', $2 - i + 1, 0,
            (array['embed_chunks', 'send_email', 'ingest_document'])[1 + i % 3],
            case when i % 97 = 0 then 'dead' else 'applied' end, 1 + (i % 7 = 0)::int,
            now() - i * ($1::float8 / $2) * interval '1 second' - interval '2 s',
            now() - i * ($1::float8 / $2) * interval '1 second' - interval '40 ms',
            case when i % 97 = 0 then 'HTTP 400: vector dimension error' end
     from generate_series(1, $2) i`,
    [7 * 86_400 - 60, historyRows],
  );
  await db.query(
    `select graphile_worker.add_jobs(array(
       select row((array['embed_chunks', 'send_email', 'ingest_document'])[1 + i % 3], json_build_object('n', i), null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $1) i))`,
    [queuedJobs],
  );
  await db.query("analyze");
}

async function seedDemo(db: pg.Pool): Promise<string> {
  await db.query(`
    insert into job_history (finished_at, job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error, result)
    select now() - s * interval '1 second', 100000 + s, 0, (array['embed_chunks', 'send_email', 'ingest_document'])[1 + s % 3],
           case when s % 211 = 0 then 'dead' else 'applied' end, 1, now() - s * interval '1 second' - interval '1.5 s',
           now() - s * interval '1 second' - interval '120 ms', case when s % 211 = 0 then 'HTTP 503: Service Unavailable (attempts exhausted)' end,
           case when s % 211 <> 0 and s % 3 = 1 then json_build_object('chunks', 3 + s % 9)::jsonb end
    from generate_series(1, 3600) s
    where s % 60 < 20 + 15 * sin(s / 400.0) + 15;
    select graphile_worker.add_job('embed_chunks', json_build_object('documentId', gen_random_uuid())) from generate_series(1, 37);
    select graphile_worker.add_job('send_email', json_build_object('to', 'user' || n || '@example.com'), run_at => now() + interval '10 minutes') from generate_series(1, 5) n;
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
    values (90001, 0, 'embed_chunks', '{"documentId": "5b1f0c9e-8a51-4c8e-9f43-0e2d7f4c1a10"}', 'permanent', 1, 25, 'HTTP 400: vector dimension error: expected 768, got 1024', now() - interval '20 min', now() - interval '20 min'),
           (90002, 0, 'send_email', '{"to": "<script>alert(1)</script>@example.com"}', 'permanent', 1, 25, 'invalid recipient: <script>alert(1)</script>@example.com', now() - interval '9 min', now() - interval '9 min'),
           (90003, 0, 'ingest_document', '{"path": "docs/handbook.md"}', 'exhausted', 25, 25, 'connect ECONNREFUSED 10.0.0.7:11434', now() - interval '3 h', now() - interval '2 min');
    insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error)
    select job_id, 0, task, 'dead', attempts, first_failed_at - interval '1 s', last_failed_at - interval '200 ms', last_error from dead_letters;
    insert into outbox (collection, point_id) select 'chunks', gen_random_uuid() from generate_series(1, 24);
    insert into workers (id, hostname, pid, concurrency, started_at, heartbeat_at) values ('web-1-4821-a1b2', 'web-1', 4821, 10, now() - interval '2 h', now()), ('web-2-977-c3d4', 'web-2', 977, 10, now() - interval '2 h', now() - interval '1 s');
    insert into reconcile_runs (collection, started_at, finished_at, qdrant_points, postgres_points, missing, extra, stale, repaired)
    values ('chunks', now() - interval '14 min', now() - interval '13 min', 48210, 48213, 3, 0, 1, true);
    insert into flow_limits (kind, name, max_running, in_use) values ('task', 'embed_chunks', 4, 4), ('queue', 'gpu', 8, 3);
    insert into dashboard_audit (actor, action, target, detail) values ('ops', 'dlq.retry', 'dead letters 17', '{"retried": [{"job": "88121", "deadLetter": "17"}]}');
  `);
  const [row] = (await db.query<{ job_id: string }>("select job_id::text from dead_letters where task = 'embed_chunks'")).rows;
  return row!.job_id;
}

const server = await startServer();
const database = await createDatabase(server, "dashboard");
const pool = new pg.Pool({ connectionString: database.url, max: 4 });
pool.on("error", () => {});
pool.on("connect", (client) => client.on("error", () => {}));
try {
  await migrate(pool, createLogger("silent"), {});
  const historyRows = envNumber("BENCH_HISTORY_ROWS", 1_000_000);
  const queuedJobs = envNumber("BENCH_QUEUED_JOBS", 100_000);
  const seedStart = performance.now();
  const deadJob = screenshots ? await seedDemo(pool) : (await seedLarge(pool, historyRows, queuedJobs), "");
  const seedSeconds = (performance.now() - seedStart) / 1000;
  // The timing runs read-only (no credentials), so each page load is one request, not a Basic-auth challenge and a retry.
  const dashboard = await createDashboard({ databaseUrl: database.url, ...(screenshots ? { auth: AUTH } : { allowAnonymous: true }) });
  const http = createServer(dashboard.listener);
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...(screenshots ? { httpCredentials: { username: AUTH.user, password: AUTH.password } } : {}) });
    const page = await context.newPage();
    if (screenshots) {
      mkdirSync(SHOTS, { recursive: true });
      const shoot = async (path: string, name: string) => {
        await page.goto(`${origin}${path}`);
        await page.waitForTimeout(400); // the chart draws after load
        await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
        console.log(`docs/screenshots/${name}.png`);
      };
      await shoot("/", "overview");
      await shoot("/jobs", "jobs");
      await shoot(`/jobs/${deadJob}`, "job");
      await shoot("/dead-letters", "dead-letters");
      await shoot("/dead-letters/preview?action=retry-all", "dead-letters-preview");
      await shoot("/syncs", "syncs");
      await page.setViewportSize({ width: 390, height: 844 });
      await shoot("/", "overview-phone");
    } else {
      const server = [];
      for (let run = 0; run < 5; run++) {
        const started = performance.now();
        const response = await dashboard.fetch(new Request(`${origin}/`));
        await response.text();
        server.push(performance.now() - started);
      }
      const browserMs = [];
      for (let run = 0; run < 5; run++) {
        const started = performance.now();
        await page.goto(`${origin}/`, { waitUntil: "load" });
        browserMs.push(performance.now() - started);
      }
      const median = (values: number[]) => round([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!, 0);
      console.log(JSON.stringify({ historyRows, queuedJobs, seedSeconds: round(seedSeconds, 1), overviewServerMs: { median: median(server), runs: server.map((ms) => round(ms, 0)) }, overviewBrowserLoadMs: { median: median(browserMs), runs: browserMs.map((ms) => round(ms, 0)) } }));
    }
  } finally {
    await browser.close();
    http.closeAllConnections();
    http.close();
    await dashboard.close();
  }
} finally {
  await pool.end();
  await database.drop();
  await server.stop();
}
