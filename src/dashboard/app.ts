import { Hono, type Context, type MiddlewareHandler } from "hono";
import { basicAuth } from "hono/basic-auth";
import { bearerAuth } from "hono/bearer-auth";
import { csrf } from "hono/csrf";
import { secureHeaders } from "hono/secure-headers";
import type { DatabasePool } from "slonik";
import { listJobs, showJob, JOB_STATES, type JobState } from "../ops/jobs.ts";
import { readStatus } from "../ops/status.ts";
import type { DeadLetterSelection } from "../ops/deadLetters.ts";
import type { Logger } from "../log.ts";
import type { QdrantClient, ReadConsistency } from "../outbox/qdrant.ts";
import type { Sync } from "../outbox/sync.ts";
import { describeError } from "../runtime/errors.ts";
import { chartScript, dashboardScript, dashboardStyle, htmxScript } from "./assets.ts";
import {
  discardDeadLettersAudited,
  listChanges,
  listDeadLetters,
  previewDeadLetters,
  readAudit,
  readThroughput,
  retryDeadLettersAudited,
  retryOutboxAudited,
} from "./data.ts";
import { errorId } from "./errors.ts";
import { noticeQuery, noticeText, type NoticeCode } from "./notices.ts";
import * as pages from "./pages.ts";
import { BackgroundReconciles } from "./reconciles.ts";

/** Who may act: a user name and password (HTTP Basic, for browsers) and/or a token (Bearer, for scripts). */
export interface DashboardCredentials {
  user?: string | undefined;
  password?: string | undefined;
  token?: string | undefined;
}

export interface DashboardAppOptions {
  pool: DatabasePool;
  /** The threshold workers are judged alive by (WORKER_DEAD_AFTER_MS), as for `status`. */
  deadAfterMs: number;
  /** With none, the dashboard is read-only: every page, no action. */
  credentials: DashboardCredentials;
  /** Where it is mounted in the application's server, e.g. "/ops"; "" at the root. */
  basePath: string;
  syncs: readonly Sync[];
  /** The Qdrant client a reconcile runs with; without it, reconciles are not offered. */
  qdrant?: QdrantClient | undefined;
  /** Qdrant's read consistency of a reconcile (QDRANT_READ_CONSISTENCY), as the reconciler's elsewhere. */
  readConsistency?: ReadConsistency | undefined;
  /** Where the detail of a failure goes; the browser gets a generic message and an id. */
  log: Logger;
  refreshSeconds?: number;
}

export interface DashboardApp {
  app: Hono<Env>;
  /** Stops the reconciles it started and waits for them. */
  close(): Promise<void>;
}

type Env = { Variables: { actor: string | null } };

/** How often each page's live part re-fetches itself by default, seconds. */
const REFRESH_SECONDS = 5;
/** Most dead letters one form may name. */
const MAX_IDS = 1000;
const ID = /^[1-9][0-9]{0,18}$/;

/**
 * The dashboard as a Hono application: pages, live updates (htmx re-fetches each page's live
 * part) and actions. Safe by default:
 * - with credentials configured, every request needs them (Basic for browsers, so the browser
 *   sends them with every form too; Bearer for scripts); without, it is read-only;
 * - POSTs must be forms from the dashboard's own origin (hono/csrf checks Origin and
 *   Sec-Fetch-Site; any other content type is refused, so no request escapes that check);
 * - a Content-Security-Policy allows scripts from the dashboard only, and templates escape
 *   every value, so a payload holding markup shows as text;
 * - every action writes who, what and when to dashboard_audit, in the action's transaction;
 * - a failure shows a generic message with an id, its detail goes to the log; the notice an
 *   action redirects with is a fixed code, so no link can put its own text on a page.
 * A reconcile runs in the background (reconciles.ts): its request answers at once.
 */
export function createDashboardApp(options: DashboardAppOptions): DashboardApp {
  const { pool, credentials, basePath, log } = options;
  const collections = new Set(options.syncs.map((sync) => sync.collection));
  const reconciles = options.qdrant
    ? new BackgroundReconciles({ pool, qdrant: options.qdrant, readConsistency: options.readConsistency, log })
    : null;
  const refreshSeconds = options.refreshSeconds ?? REFRESH_SECONDS;
  const canAct = Boolean(credentials.password || credentials.token);
  const app = new Hono<Env>().basePath(basePath || "/");

  app.use(
    "*",
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", "data:"],
        connectSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
    }),
  );
  const basic: MiddlewareHandler | null = credentials.password ? basicAuth({ username: credentials.user ?? "admin", password: credentials.password, realm: "pgconverge dashboard" }) : null;
  const bearer: MiddlewareHandler | null = credentials.token ? bearerAuth({ token: credentials.token }) : null;
  app.use("*", async (c, next) => {
    c.set("actor", null);
    if (!canAct) return next();
    const header = c.req.header("authorization") ?? "";
    if (bearer && (/^bearer /i.test(header) || !basic)) {
      c.set("actor", "token");
      return bearer(c, next);
    }
    c.set("actor", credentials.user ?? "admin");
    return basic!(c, next);
  });
  app.use("*", csrf());
  app.use("*", async (c, next) => {
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    if (!canAct) return c.text("read-only dashboard: configure DASHBOARD_PASSWORD or DASHBOARD_TOKEN to take actions", 403);
    const type = c.req.header("content-type") ?? "";
    if (!/^(application\/x-www-form-urlencoded|multipart\/form-data)\b/i.test(type)) return c.text("actions are form posts", 415);
    return next();
  });

  const context = (c: Context<Env, any, any>): pages.PageContext => {
    const url = new URL(c.req.url);
    return { base: basePath, self: url.pathname + url.search, canAct, actor: c.get("actor"), refreshSeconds, notice: noticeText((name) => c.req.query(name), collections) };
  };
  const status = () => readStatus(pool, { deadAfterMs: options.deadAfterMs });
  const back = (c: Context<Env>, path: string, notice: NoticeCode, params: Record<string, string | number> = {}) =>
    c.redirect(`${basePath}${path}${path.includes("?") ? "&" : "?"}${noticeQuery(notice, params)}`, 303);

  app.get("/assets/htmx.js", (c) => c.body(htmxScript(), 200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "max-age=3600" }));
  app.get("/assets/chart.js", (c) => c.body(chartScript(), 200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "max-age=3600" }));
  app.get("/assets/dashboard.js", (c) => c.body(dashboardScript, 200, { "content-type": "text/javascript; charset=utf-8" }));
  app.get("/assets/dashboard.css", (c) => c.body(dashboardStyle, 200, { "content-type": "text/css; charset=utf-8" }));

  /** The same JSON as `pgconverge status --json`. */
  app.get("/api/status", async (c) => c.json(await status()));

  app.get("/", async (c) => {
    const [report, throughput] = [await status(), await readThroughput(pool)];
    return c.html(pages.overviewPage(context(c), report, throughput));
  });

  app.get("/jobs", async (c) => {
    const task = c.req.query("task") || undefined;
    const state = c.req.query("state") || undefined;
    if (state !== undefined && !(JOB_STATES as readonly string[]).includes(state)) return c.html(pages.errorPage(context(c), "Jobs", `unknown state ${state}`), 400);
    const jobs = await listJobs(pool, { limit: 100, ...(task === undefined ? {} : { task }), ...(state === undefined ? {} : { state: state as JobState }) });
    return c.html(pages.jobsPage(context(c), { task, state }, jobs));
  });

  app.get("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const detail = ID.test(id) ? await showJob(pool, id) : null;
    if (detail === null) return c.html(pages.errorPage(context(c), `Job ${id}`, "No such job (never existed, or finished before the history's retention)."), 404);
    return c.html(pages.jobPage(context(c), detail));
  });

  app.get("/dead-letters", async (c) => {
    const task = c.req.query("task") || undefined;
    const rows = await listDeadLetters(pool, { limit: 200, ...(task === undefined ? {} : { task }) });
    const report = await status();
    const total = task === undefined ? report.jobs.dead : (report.jobs.byTask[task]?.dead ?? 0);
    return c.html(pages.deadLettersPage(context(c), task, rows, total));
  });

  app.get("/dead-letters/preview", async (c) => {
    const requested = c.req.query("action");
    const action = requested === "discard" ? "discard" : "retry";
    const task = c.req.query("task") || undefined;
    const ids = (c.req.queries("id") ?? []).filter((id) => ID.test(id)).slice(0, MAX_IDS);
    const selection: DeadLetterSelection = requested === "retry-all" ? { all: true, ...(task === undefined ? {} : { task }) } : { ids };
    const preview = await previewDeadLetters(pool, selection);
    return c.html(pages.previewPage(context(c), action, "ids" in selection ? { ids } : { task }, preview));
  });

  const selectionOf = async (c: Context<Env, any, any>): Promise<DeadLetterSelection | null> => {
    const form = await c.req.formData();
    const ids = form.getAll("id").map(String);
    const task = String(form.get("task") ?? "") || undefined;
    if (form.get("all") === "1") return { all: true, ...(task === undefined ? {} : { task }) };
    if (ids.length === 0 || ids.length > MAX_IDS || !ids.every((id) => ID.test(id))) return null;
    return { ids };
  };

  app.post("/dead-letters/retry", async (c) => {
    const selection = await selectionOf(c);
    if (selection === null) return c.text("select dead letters by id", 400);
    const retried = await retryDeadLettersAudited(pool, c.get("actor")!, selection);
    if (retried.length === 1) return back(c, `/jobs/${retried[0]!.jobId}`, "retried-one", { dl: retried[0]!.deadLetterId, job: retried[0]!.jobId });
    return back(c, "/dead-letters", "retried", { n: retried.length });
  });

  app.post("/dead-letters/discard", async (c) => {
    const selection = await selectionOf(c);
    if (selection === null) return c.text("select dead letters by id", 400);
    const discarded = await discardDeadLettersAudited(pool, c.get("actor")!, selection);
    return back(c, "/dead-letters", "discarded", { n: discarded.length });
  });

  app.get("/outbox", async (c) => {
    const rows = await listChanges(pool, { dead: c.req.query("dead") === "1", limit: 200 });
    return c.html(pages.outboxPage(context(c), await status(), rows));
  });

  app.post("/outbox/retry", async (c) => {
    const retried = await retryOutboxAudited(pool, c.get("actor")!, undefined);
    return back(c, "/outbox", "outbox-retried", { n: retried.length });
  });

  app.get("/syncs", async (c) => {
    const report = await status();
    const collections = [...new Set([...options.syncs.map((sync) => sync.collection), ...Object.keys(report.reconcile.byCollection)])].sort();
    const views = collections.map((collection) => ({ collection, latest: report.reconcile.byCollection[collection] }));
    return c.html(pages.syncsPage(context(c), views, reconciles !== null && options.syncs.length > 0, reconciles?.list() ?? []));
  });

  app.post("/syncs/reconcile", async (c) => {
    const form = await c.req.formData();
    const sync = options.syncs.find((each) => each.collection === String(form.get("collection")));
    if (!sync || !reconciles) return c.text("no such sync here", 400);
    const started = reconciles.start(sync, form.get("repair") === "1", c.get("actor")!);
    return back(c, "/syncs", started ? "reconcile-started" : "reconcile-busy", { collection: sync.collection });
  });

  app.get("/audit", async (c) => c.html(pages.auditPage(context(c), await readAudit(pool, 200))));

  app.onError((error, c) => {
    if ("getResponse" in error && typeof error.getResponse === "function") return error.getResponse() as Response;
    const id = errorId();
    log.error({ errorId: id, method: c.req.method, path: c.req.path, error: describeError(error) }, "dashboard request failed");
    return c.text(`The dashboard could not answer this request (error ${id}); the server's log has the detail under that id.`, 500);
  });
  return { app, close: async () => reconciles?.close() };
}
