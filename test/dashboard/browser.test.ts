// The dashboard, driven in headless Chromium: numbers agree with `status --json`, a dead letter
// is retried by clicking, actions need credentials and the dashboard's own origin, markup in
// payloads is text, and the pages fit a phone.
import t from "tap";
import type { Browser, BrowserContext } from "playwright-core";
import { createDashboard } from "../../src/api/dashboard.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { createEffectsTable } from "../helpers/fixtures.ts";
import { launchChromium, listen, NO_BROWSER } from "../helpers/browser.ts";
import { startWorker } from "../helpers/worker.ts";

const USER = "ops";
const PASSWORD = "correct horse battery staple";
const HOSTILE = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>`;

async function deadLetter(db: TestDatabase, task: string, payload: unknown, error = "document is not valid UTF-8"): Promise<string> {
  const [row] = await db.query<{ id: string }>(
    `insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
     values ((select coalesce(max(job_id), 5000) + 1 from dead_letters), 0, $1, $2, 'permanent', 1, 5, $3, now(), now()) returning id::text`,
    [task, JSON.stringify(payload), error],
  );
  return row!.id;
}

t.test("the dashboard in a browser", { skip: NO_BROWSER }, async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  // Jobs of a task no worker runs stay pending; an outbox change waits for a relay.
  await db.query(`select graphile_worker.add_job('report', json_build_object('n', n)) from generate_series(1, 3) n`);
  await db.query(`insert into outbox (collection, point_id) values ('chunks', gen_random_uuid())`);
  const dashboard = await createDashboard({ pool: db.pool, auth: { user: USER, password: PASSWORD }, refreshSeconds: 1 });
  const server = await listen(dashboard.listener);
  const browser: Browser = await launchChromium();
  t.teardown(async () => {
    await browser.close();
    await server.close();
    await dashboard.close();
  });
  const signedIn: BrowserContext = await browser.newContext({ httpCredentials: { username: USER, password: PASSWORD } });
  const page = await signedIn.newPage();

  t.test("the overview's numbers equal `status --json`", async (t) => {
    await deadLetter(db, "report", { n: 9 });
    await db.query("insert into flow_limits (kind, name, max_running) values ('task', 'embed_chunks', 4)");
    const status = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
    t.equal(status.code, 0, status.stderr);
    const report = JSON.parse(status.stdout);
    await page.goto(`${server.origin}/`);
    const stat = async (name: string) => (await page.locator(`[data-stat="${name}"]`).first().textContent())?.trim();
    t.equal(await stat("jobs.pending"), String(report.jobs.pending));
    t.equal(await stat("jobs.dead"), String(report.jobs.dead));
    t.equal(await stat("outbox.pending"), String(report.outbox.pending));
    t.equal(await stat("outbox.dead"), String(report.outbox.dead));
    t.equal(await stat("workers.alive"), String(report.workers.alive));
    t.equal(report.jobs.pending, 3, "the seeded jobs are what is compared");
    t.equal(report.workers.alive, 1);
    const [limit] = report.flow.limits;
    t.match(limit, { kind: "task", name: "embed_chunks", maxRunning: 4, inUse: 0, waiting: 0 });
    t.match(
      (await page.locator('tr[data-limit="task:embed_chunks"]').textContent())?.replace(/\s+/g, " "),
      `task embed_chunks${limit.inUse}/${limit.maxRunning}${limit.waiting}`,
      "the limits panel shows the limit in use, as status does",
    );
    const apiStatus = await (await signedIn.request.get(`${server.origin}/api/status`)).json();
    const counts = (byTask: Record<string, Record<string, unknown>>) =>
      Object.fromEntries(Object.entries(byTask).map(([task, { oldestPendingAgeSeconds: _age, ...rest }]) => [task, rest]));
    t.same(counts(apiStatus.jobs.byTask), counts(report.jobs.byTask), "the dashboard's JSON is the CLI's (ages aside, which move)");
  });

  t.test("a dead letter retried by clicking runs again, and its page shows it applied", async (t) => {
    const id = await deadLetter(db, "effect", { n: 42 });
    await page.goto(`${server.origin}/dead-letters`);
    await page.locator(`tr[data-dead-letter="${id}"] input[type=checkbox]`).check();
    await page.getByRole("button", { name: "Retry selected…" }).click();
    t.match(await page.locator("#preview-summary").textContent(), /re-enqueues 1 dead letter\(s\) \(effect × 1\)/, "the preview says what will happen");
    await page.locator("#confirm").click();
    await page.waitForURL(/\/jobs\/\d+/);
    t.match(await page.locator("#notice").textContent(), new RegExp(`dead letter ${id} re-enqueued as job \\d+`));
    // The page updates itself: no reload.
    await page.locator('[data-stat="job.state"]', { hasText: "applied" }).waitFor({ timeout: 30_000 });
    t.pass("the job page shows the job applied");
    t.same(await db.query("select n from test_effects"), [{ n: 42 }], "its effect committed once");
    const [audit] = await db.query<{ actor: string; action: string }>("select actor, action from dashboard_audit order by id desc limit 1");
    t.same(audit, { actor: USER, action: "dlq.retry" }, "the action is in the audit log");
    await page.goto(`${server.origin}/audit`);
    t.match(await page.locator("main").textContent(), /dlq\.retry/);
  });

  t.test("a POST without credentials, or from another site, is refused", async (t) => {
    const id = await deadLetter(db, "report", { n: 1 });
    const anonymous = await browser.newContext();
    t.teardown(() => anonymous.close());
    t.equal((await anonymous.request.get(`${server.origin}/`)).status(), 401, "no credentials, no page");
    const post = await anonymous.request.post(`${server.origin}/dead-letters/discard`, { form: { id } });
    t.equal(post.status(), 401, "no credentials, no action");

    // Another origin's page posts a form to the dashboard; the browser has the credentials.
    const evil = await listen((_request, response) => {
      response.setHeader("content-type", "text/html");
      response.end(`<form method="post" action="${server.origin}/dead-letters/discard"><input name="id" value="${id}"></form><script>document.forms[0].submit()</script>`);
    });
    t.teardown(() => evil.close());
    const attacked = await signedIn.newPage();
    const [response] = await Promise.all([attacked.waitForResponse(`${server.origin}/dead-letters/discard`), attacked.goto(`${evil.origin}/`)]);
    t.equal(response.status(), 403, "the cross-site form post is refused");
    await attacked.close();
    t.equal((await db.query("select 1 from dead_letters where id = $1", [id])).length, 1, "the dead letter is still there");
  });

  t.test("payloads and errors holding markup are shown as text", async (t) => {
    const id = await deadLetter(db, "report", { html: HOSTILE }, `failed on ${HOSTILE}`);
    await page.goto(`${server.origin}/dead-letters`);
    const row = page.locator(`tr[data-dead-letter="${id}"]`);
    t.match(await row.locator("pre.payload").textContent(), "<script>window.__pwned = 1</script>");
    t.match(await row.locator("pre.error").textContent(), "<b>bold</b>");
    t.equal(await row.locator("b, img, script").count(), 0, "no element was made from it");
    t.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined, "nothing of it ran");
  });

  t.test("every page fits a phone's width", async (t) => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, httpCredentials: { username: USER, password: PASSWORD } });
    t.teardown(() => phone.close());
    const phonePage = await phone.newPage();
    for (const path of ["/", "/jobs", "/dead-letters", "/outbox", "/syncs", "/audit"]) {
      await phonePage.goto(`${server.origin}${path}`);
      const width = await phonePage.evaluate(() => document.documentElement.scrollWidth);
      t.ok(width <= 390, `${path} is ${width} px wide`);
      t.ok(await phonePage.getByRole("link", { name: "Dead letters" }).isVisible(), `${path}: the navigation is there`);
    }
  });
});

t.test("without credentials the dashboard is read-only", { skip: NO_BROWSER }, async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const id = await deadLetter(db, "report", { n: 1 });
  const dashboard = await createDashboard({ pool: db.pool, allowAnonymous: true });
  t.teardown(() => dashboard.close());
  const page = await dashboard.fetch(new Request("http://127.0.0.1/dead-letters"));
  t.equal(page.status, 200);
  const text = await page.text();
  t.match(text, /Read-only/);
  t.notMatch(text, /type="checkbox"/, "no selection to act on");
  const post = await dashboard.fetch(
    new Request("http://127.0.0.1/dead-letters/discard", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: "http://127.0.0.1" }, body: `id=${id}` }),
  );
  t.equal(post.status, 403);
  t.equal((await db.query("select 1 from dead_letters")).length, 1);
});
