import { html } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";
import type { JobDetail, JobSummary } from "../ops/jobs.ts";
import { JOB_STATES } from "../ops/jobs.ts";
import type { DeadLetter } from "../ops/deadLetters.ts";
import type { StatusReport } from "../ops/status.ts";
import type { OutboxRow } from "../outbox/outbox.ts";
import type { AuditEntry, DeadLetterPreview, MinuteCounts } from "./data.ts";
import type { ReconcileRun } from "./reconciles.ts";

/**
 * The dashboard's pages, as hono/html templates: every interpolated value is escaped (payloads,
 * errors and names are shown as text, never as HTML); only other templates pass through.
 * Each page's <main id="live"> re-fetches itself every few seconds through htmx (hx-select
 * takes the fresh #live from the page), so numbers update without a reload; pages with forms
 * keep the form outside the live part, so a refresh never clears a selection.
 */

type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

export interface PageContext {
  /** Where the dashboard is mounted ("" or "/ops"). */
  base: string;
  /** This page's own path and query, which its live part re-fetches. */
  self: string;
  /** Actions allowed (credentials configured); false shows everything read-only. */
  canAct: boolean;
  /** Who is signed in, if anyone. */
  actor: string | null;
  refreshSeconds: number;
  /** A one-line result of the last action, shown once. */
  notice?: string | undefined;
}

const json = (value: unknown) => JSON.stringify(value, null, 2);
const age = (seconds: number | null) => (seconds === null ? "–" : seconds < 90 ? `${seconds.toFixed(1)} s` : seconds < 5400 ? `${Math.round(seconds / 60)} min` : `${(seconds / 3600).toFixed(1)} h`);
const ms = (value: number | null) => (value === null ? "–" : value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(2)} s`);
const time = (iso: string | null) => (iso === null ? "–" : iso.replace("T", " ").replace(/\.\d+Z$/, "Z"));

export function layout(context: PageContext, title: string, live: Html, extra: Html = html``): Html {
  const { base } = context;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}'>
<title>${title} · pgconverge</title>
<link rel="stylesheet" href="${base}/assets/dashboard.css">
<script src="${base}/assets/htmx.js" defer></script>
<script src="${base}/assets/chart.js" defer></script>
<script src="${base}/assets/dashboard.js" defer></script>
</head>
<body>
<header>
  <strong>pgconverge</strong>
  <a href="${base}/">Overview</a>
  <a href="${base}/jobs">Jobs</a>
  <a href="${base}/dead-letters">Dead letters</a>
  <a href="${base}/outbox">Outbox</a>
  <a href="${base}/syncs">Syncs</a>
  <a href="${base}/audit">Audit</a>
  <span class="muted">${context.actor === null ? "" : `signed in as ${context.actor}`}</span>
</header>
<main>
${context.canAct ? "" : html`<p class="banner">Read-only: no dashboard credentials are configured (DASHBOARD_PASSWORD or DASHBOARD_TOKEN), so actions are off.</p>`}
${context.notice === undefined ? "" : html`<p class="notice" id="notice">${context.notice}</p>`}
<h1>${title}</h1>
<div id="live" hx-get="${context.self}" hx-trigger="every ${context.refreshSeconds}s" hx-select="#live" hx-swap="outerHTML">
${live}
</div>
${extra}
</main>
</body>
</html>`;
}

function card(label: string, value: string | number, id: string, tone = ""): Html {
  return html`<div class="card"><div class="value ${tone}" data-stat="${id}">${value}</div><div class="label">${label}</div></div>`;
}

export function overviewPage(context: PageContext, status: StatusReport, throughput: MinuteCounts[]): Html {
  const { jobs, outbox, workers } = status;
  const applied = throughput.reduce((sum, point) => sum + point.applied, 0);
  const dead = throughput.reduce((sum, point) => sum + point.dead, 0);
  const tasks = Object.entries(jobs.byTask);
  const collections = Object.entries(outbox.byCollection);
  const live = html`
<div class="cards">
  ${card("pending", jobs.pending, "jobs.pending")}
  ${card("running", jobs.running, "jobs.running")}
  ${card("retrying", jobs.retrying, "jobs.retrying")}
  ${card("scheduled", jobs.scheduled, "jobs.scheduled")}
  ${card("dead letters", jobs.dead, "jobs.dead", jobs.dead > 0 ? "bad" : "")}
  ${card("outbox pending", outbox.pending, "outbox.pending")}
  ${card("outbox dead", outbox.dead, "outbox.dead", outbox.dead > 0 ? "bad" : "")}
  ${card("outbox lag", age(outbox.oldestPendingAgeSeconds), "outbox.lag")}
  ${card("workers alive", workers.alive, "workers.alive", workers.alive === 0 ? "bad" : "good")}
</div>
<section>
  <h2>Last hour: <span data-stat="hour.applied">${applied}</span> applied, <span data-stat="hour.dead" class="${dead > 0 ? "bad" : ""}">${dead}</span> dead</h2>
  <div class="chart"><canvas id="throughput" data-series="${JSON.stringify(throughput)}" aria-label="jobs finished per minute"></canvas></div>
</section>
<section>
  <h2>Jobs per task</h2>
  ${tasks.length === 0
    ? html`<p class="muted">No jobs queued and none dead.</p>`
    : html`<table><thead><tr><th>task</th><th class="num">pending</th><th class="num">scheduled</th><th class="num">retrying</th><th class="num">running</th><th class="num">exhausted</th><th class="num">dead</th><th class="num">oldest pending</th></tr></thead><tbody>
${tasks.map(([task, counts]) => html`<tr data-task="${task}"><td><a href="${context.base}/jobs?task=${encodeURIComponent(task)}">${task}</a></td><td class="num">${counts.pending}</td><td class="num">${counts.scheduled}</td><td class="num">${counts.retrying}</td><td class="num">${counts.running}</td><td class="num">${counts.exhausted}</td><td class="num">${counts.dead}</td><td class="num">${age(counts.oldestPendingAgeSeconds)}</td></tr>`)}
</tbody></table>`}
  ${jobs.unknownTasks.map(({ task, count }) => html`<p class="bad">No live worker has task ${task}: ${count} due job(s) wait.</p>`)}
</section>
<section>
  <h2>Outbox</h2>
  ${collections.length === 0
    ? html`<p class="muted">Empty: Qdrant has every change.</p>`
    : html`<table><thead><tr><th>collection</th><th class="num">pending</th><th class="num">retrying</th><th class="num">in flight</th><th class="num">dead</th><th class="num">lag</th></tr></thead><tbody>
${collections.map(([name, counts]) => html`<tr><td>${name}</td><td class="num">${counts.pending}</td><td class="num">${counts.retrying}</td><td class="num">${counts.inFlight}</td><td class="num">${counts.dead}</td><td class="num">${age(counts.oldestPendingAgeSeconds)}</td></tr>`)}
</tbody></table>`}
</section>
<section>
  <h2>Workers (dead after ${age(workers.deadAfterMs / 1000)} without a heartbeat)</h2>
  ${workers.list.length === 0
    ? html`<p class="muted">None registered.</p>`
    : html`<table><thead><tr><th>worker</th><th>state</th><th class="num">last heartbeat</th><th class="num">running</th></tr></thead><tbody>
${workers.list.map((worker) => html`<tr><td>${worker.id}</td><td class="${worker.alive ? "good" : "bad"}">${worker.alive ? "alive" : "dead"}</td><td class="num">${age(worker.heartbeatAgeSeconds)} ago</td><td class="num">${worker.runningJobs}/${worker.concurrency}</td></tr>`)}
</tbody></table>`}
</section>
<section>
  <h2>Fleet-wide limits</h2>
  ${status.flow.limits.length === 0
    ? html`<p class="muted">No concurrency limit is set (FLOW_TASK_CONCURRENCY, FLOW_QUEUE_CONCURRENCY, or a task's flow option).</p>`
    : html`<table><thead><tr><th>limit</th><th class="num">in use</th><th class="num">waiting</th><th class="num">longest wait</th></tr></thead><tbody>
${status.flow.limits.map((limit) => html`<tr data-limit="${limit.kind}:${limit.name}"><td>${limit.kind} ${limit.name}</td><td class="num ${limit.inUse >= limit.maxRunning ? "bad" : ""}">${limit.inUse}/${limit.maxRunning}</td><td class="num">${limit.waiting}</td><td class="num">${age(limit.oldestWaitingAgeSeconds)}</td></tr>`)}
</tbody></table>`}
</section>
`;
  return layout(context, "Overview", live);
}

function jobRow(base: string, job: JobSummary): Html {
  return html`<tr><td><a href="${base}/jobs/${job.jobId}">${job.jobId}</a></td><td>${job.task}</td><td class="state-${job.state}">${job.state}</td><td class="num">${job.maxAttempts === null ? job.attempts : `${job.attempts}/${job.maxAttempts}`}</td><td>${time(job.enqueuedAt)}</td><td>${time(job.finishedAt)}</td><td class="num">${ms(job.durationMs)}</td><td>${job.lastError ?? ""}</td></tr>`;
}

export function jobsPage(context: PageContext, filter: { task?: string | undefined; state?: string | undefined }, jobs: JobSummary[]): Html {
  const filters = html`<section><form class="filters" method="get" action="${context.base}/jobs">
  <label>task <input name="task" value="${filter.task ?? ""}"></label>
  <label>state <select name="state"><option value="">any</option>${JOB_STATES.map((state) => html`<option ${state === filter.state ? "selected" : ""}>${state}</option>`)}</select></label>
  <button type="submit">Filter</button>
</form></section>`;
  const live = html`<section>${jobs.length === 0
    ? html`<p class="muted">No jobs match.</p>`
    : html`<table><thead><tr><th>job</th><th>task</th><th>state</th><th class="num">attempts</th><th>enqueued</th><th>finished</th><th class="num">duration</th><th>last error</th></tr></thead><tbody>${jobs.map((job) => jobRow(context.base, job))}</tbody></table>`}</section>`;
  return layout(context, "Jobs", html`${filters}${live}`);
}

export function jobPage(context: PageContext, detail: JobDetail): Html {
  const { queued } = detail;
  const live = html`
<section>
  <h2>State: <span data-stat="job.state">${queued ? queued.state : (detail.history.at(-1)?.outcome ?? "dead")}</span></h2>
  <p>Task ${detail.task}${queued ? html`, attempts ${queued.attempts}/${queued.maxAttempts}, enqueued ${time(queued.enqueuedAt)}, due ${time(queued.runAt)}` : ""}</p>
  ${queued?.lastError ? html`<p>Last error:</p><pre class="error">${queued.lastError}</pre>` : ""}
  ${queued ? html`<p>Payload:</p><pre class="payload">${json(queued.payload)}</pre>` : ""}
</section>
${detail.failures
  ? html`<section><h2>Failures</h2><p>${detail.failures.failures} failed attempt(s), first ${time(detail.failures.firstFailedAt)}, last ${time(detail.failures.lastFailedAt)}</p><pre class="error">${detail.failures.lastError}</pre></section>`
  : ""}
<section>
  <h2>History</h2>
  ${detail.history.length === 0
    ? html`<p class="muted">Not finished yet.</p>`
    : html`<table><thead><tr><th>outcome</th><th class="num">attempts</th><th>enqueued</th><th>started</th><th>finished</th><th class="num">duration</th><th>error / result</th></tr></thead><tbody>
${detail.history.map((record) => html`<tr data-outcome="${record.outcome}"><td>${record.outcome}</td><td class="num">${record.attempts}</td><td>${time(record.enqueuedAt)}</td><td>${time(record.startedAt)}</td><td>${time(record.finishedAt)}</td><td class="num">${ms(record.durationMs)}</td><td>${record.lastError === null ? "" : html`<pre class="error">${record.lastError}</pre>`}${record.result === null || record.result === undefined ? "" : html`<pre class="result">${json(record.result)}</pre>`}</td></tr>`)}
</tbody></table>`}
</section>
${detail.deadLetters.map((dead) => html`<section><h2>Dead letter ${dead.id}</h2><p>${dead.reason}, ${dead.attempts}/${dead.maxAttempts} attempts, ${time(dead.deadAt)}</p><pre class="error">${dead.lastError}</pre><p>Payload:</p><pre class="payload">${json(dead.payload)}</pre>
${context.canAct ? html`<form class="inline" method="get" action="${context.base}/dead-letters/preview"><input type="hidden" name="id" value="${dead.id}"><button name="action" value="retry">Retry…</button> <button name="action" value="discard" class="danger">Discard…</button></form>` : ""}</section>`)}
`;
  return layout(context, `Job ${detail.jobId}`, live);
}

export function deadLettersPage(context: PageContext, task: string | undefined, rows: DeadLetter[], total: number): Html {
  const live = html`<p><span data-stat="dead.total">${total}</span> dead letter(s)${task === undefined ? "" : html` of task ${task}`}.</p>`;
  const list = html`<section>
<form method="get" action="${context.base}/dead-letters/preview">
${task === undefined ? "" : html`<input type="hidden" name="task" value="${task}">`}
${rows.length === 0
  ? html`<p class="muted">No dead letters.</p>`
  : html`<table><thead><tr>${context.canAct ? html`<th></th>` : ""}<th>id</th><th>job</th><th>task</th><th>reason</th><th class="num">attempts</th><th>dead since</th><th>last error</th><th>payload</th></tr></thead><tbody>
${rows.map((row) => html`<tr data-dead-letter="${row.id}">${context.canAct ? html`<td><input type="checkbox" name="id" value="${row.id}" aria-label="select dead letter ${row.id}"></td>` : ""}<td>${row.id}</td><td><a href="${context.base}/jobs/${row.jobId}">${row.jobId}</a></td><td>${row.task}</td><td>${row.reason}</td><td class="num">${row.attempts}/${row.maxAttempts}</td><td>${time(row.deadAt)}</td><td><pre class="error">${row.lastError}</pre></td><td><pre class="payload">${json(row.payload)}</pre></td></tr>`)}
</tbody></table>`}
${context.canAct && rows.length > 0
  ? html`<p><button name="action" value="retry">Retry selected…</button> <button name="action" value="discard" class="danger">Discard selected…</button>
<button name="action" value="retry-all">Retry all${task === undefined ? "" : html` of ${task}`}…</button></p>`
  : ""}
</form></section>`;
  return layout(context, "Dead letters", live, list);
}

export function previewPage(context: PageContext, action: "retry" | "discard", selection: { ids?: string[]; task?: string | undefined }, preview: DeadLetterPreview): Html {
  const verb = action === "retry" ? "re-enqueues" : "deletes for good";
  const summary = Object.entries(preview.byTask).map(([task, n]) => `${task} × ${n}`).join(", ");
  const form = html`<section>
<p id="preview-summary">${action === "retry" ? "Retry" : "Discard"} ${verb} ${preview.count} dead letter(s)${summary === "" ? "" : ` (${summary})`}.${action === "retry" ? " Each becomes a new job with its original task, payload and queue and fresh attempts; the dead letter is removed." : " Their payloads are lost."}</p>
${preview.sample.length === 0 ? "" : html`<table><thead><tr><th>id</th><th>task</th><th>last error</th><th>payload</th></tr></thead><tbody>${preview.sample.map((row) => html`<tr><td>${row.id}</td><td>${row.task}</td><td><pre class="error">${row.lastError}</pre></td><td><pre class="payload">${json(row.payload)}</pre></td></tr>`)}</tbody></table>`}
${preview.count > preview.sample.length ? html`<p class="muted">… and ${preview.count - preview.sample.length} more.</p>` : ""}
${context.canAct && preview.count > 0
  ? html`<form method="post" action="${context.base}/dead-letters/${action}">
${(selection.ids ?? []).map((id) => html`<input type="hidden" name="id" value="${id}">`)}
${selection.ids === undefined ? html`<input type="hidden" name="all" value="1">` : ""}
${selection.task === undefined ? "" : html`<input type="hidden" name="task" value="${selection.task}">`}
<button type="submit" class="${action === "discard" ? "danger" : ""}" id="confirm">Confirm ${action}</button> <a href="${context.base}/dead-letters">Cancel</a>
</form>`
  : html`<p><a href="${context.base}/dead-letters">Back</a></p>`}
</section>`;
  return layout(context, `${action === "retry" ? "Retry" : "Discard"} dead letters`, html``, form);
}

export function outboxPage(context: PageContext, status: StatusReport, rows: readonly OutboxRow[]): Html {
  const live = html`<div class="cards">${card("pending", status.outbox.pending, "outbox.pending")}${card("dead", status.outbox.dead, "outbox.dead", status.outbox.dead > 0 ? "bad" : "")}${card("lag", age(status.outbox.oldestPendingAgeSeconds), "outbox.lag")}</div>
<section>${rows.length === 0
    ? html`<p class="muted">The outbox is empty: Qdrant has every change.</p>`
    : html`<table><thead><tr><th>id</th><th>state</th><th>collection</th><th>point</th><th class="num">attempts</th><th class="num">age</th><th>last error</th></tr></thead><tbody>
${rows.map((row) => html`<tr><td>${row.id}</td><td class="${row.state === "dead" ? "bad" : ""}">${row.state}</td><td>${row.collection}</td><td>${row.point_id}</td><td class="num">${row.attempts}</td><td class="num">${age(row.age_s)}</td><td>${row.last_error === null ? "" : html`<pre class="error">${row.last_error}</pre>`}</td></tr>`)}
</tbody></table>`}</section>`;
  const actions = context.canAct && status.outbox.dead > 0
    ? html`<section><form method="post" action="${context.base}/outbox/retry"><button type="submit">Put all ${status.outbox.dead} dead change(s) back in line</button></form></section>`
    : html``;
  return layout(context, "Outbox", live, actions);
}

export interface SyncView {
  collection: string;
  latest: StatusReport["reconcile"]["byCollection"][string] | undefined;
}

function reconcileRunRow(run: ReconcileRun): Html {
  const kind = run.repair ? "repair" : "dry run";
  const state = run.finishedAt === null
    ? html`<td data-reconcile-state="running">running${run.progress ? ` (${run.progress.phase}: ${run.progress.done}${run.progress.total === null ? "" : ` of ${run.progress.total}`})` : ""}</td>`
    : run.report
      ? html`<td data-reconcile-state="done">done: drift ${run.report.missing + run.report.extra + run.report.stale} (missing ${run.report.missing}, extra ${run.report.extra}, stale ${run.report.stale})${run.repair ? ", queued for repair" : ""}</td>`
      : html`<td data-reconcile-state="failed" class="bad">failed (error ${run.errorId}; the server's log has the detail)</td>`;
  return html`<tr data-reconcile="${run.collection}"><td>${run.collection}</td><td>${kind}</td><td>${run.actor}</td><td>${time(run.startedAt)}</td>${state}</tr>`;
}

export function syncsPage(context: PageContext, syncs: SyncView[], canReconcile: boolean, runs: readonly ReconcileRun[] = []): Html {
  const live = html`<section>${syncs.length === 0
    ? html`<p class="muted">No syncs: none declared here, and no reconcile has run.</p>`
    : html`<table><thead><tr><th>collection</th><th class="num">drift</th><th class="num">missing</th><th class="num">extra</th><th class="num">stale</th><th>repaired</th><th>last reconcile</th></tr></thead><tbody>
${syncs.map(({ collection, latest }) => html`<tr><td>${collection}</td>${latest
      ? html`<td class="num ${latest.drift > 0 ? "bad" : ""}">${latest.drift}</td><td class="num">${latest.missing}</td><td class="num">${latest.extra}</td><td class="num">${latest.stale}</td><td>${latest.repaired ? "yes" : "no"}</td><td>${time(latest.finishedAt)} (${age(latest.ageSeconds)} ago)</td>`
      : html`<td colspan="6" class="muted">never reconciled</td>`}</tr>`)}
</tbody></table>`}</section>${runs.length === 0
    ? ""
    : html`<section><h2>Reconciles started here</h2><table><thead><tr><th>collection</th><th>kind</th><th>by</th><th>started</th><th>state</th></tr></thead><tbody>${runs.map(reconcileRunRow)}</tbody></table></section>`}`;
  const actions = context.canAct && canReconcile
    ? html`<section><h2>Run a reconcile</h2>${syncs.map(({ collection }) => html`<form class="inline" method="post" action="${context.base}/syncs/reconcile"><input type="hidden" name="collection" value="${collection}"><button name="repair" value="0">Dry run ${collection}</button> <button name="repair" value="1">Repair ${collection}</button></form> `)}</section>`
    : html``;
  return layout(context, "Syncs", live, actions);
}

export function auditPage(context: PageContext, entries: AuditEntry[]): Html {
  const live = html`<section>${entries.length === 0
    ? html`<p class="muted">No actions taken yet.</p>`
    : html`<table><thead><tr><th>when</th><th>who</th><th>what</th><th>target</th><th>detail</th></tr></thead><tbody>
${entries.map((entry) => html`<tr><td>${time(entry.at)}</td><td>${entry.actor}</td><td>${entry.action}</td><td>${entry.target}</td><td><pre>${JSON.stringify(entry.detail)}</pre></td></tr>`)}
</tbody></table>`}</section>`;
  return layout(context, "Audit", live);
}

export function errorPage(context: PageContext, title: string, message: string): Html {
  return layout(context, title, html`<section><p>${message}</p></section>`);
}
