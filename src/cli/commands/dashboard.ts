import type { ServerType } from "@hono/node-server";
import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import type { Sync } from "../../outbox/sync.ts";
import { openContext, untilSignal } from "../context.ts";

/**
 * `pgconverge dashboard`: serves the web dashboard on DASHBOARD_HOST:DASHBOARD_PORT
 * (127.0.0.1:9465) until SIGTERM/SIGINT. Without DASHBOARD_PASSWORD or DASHBOARD_TOKEN it is
 * read-only and, when DASHBOARD_READER_DATABASE_URL is given, connects as that read-only login.
 * Its connections honour DATABASE_POOL_MODE (the reader login's too: it is assumed to go
 * through the same pooler).
 */
export async function dashboardCommand(config: Config, log: Logger, syncs: readonly Sync[]): Promise<number> {
  // Loaded here, not with the CLI: every other command starts without the HTTP stack.
  const [{ serve }, { openDashboard }] = await Promise.all([import("@hono/node-server"), import("../../dashboard/open.ts")]);
  const context = await openContext(config, log, 1);
  const credentials = { user: config.DASHBOARD_USER, password: config.DASHBOARD_PASSWORD, token: config.DASHBOARD_TOKEN };
  const readOnly = !credentials.password && !credentials.token;
  const asReader = readOnly && config.DASHBOARD_READER_DATABASE_URL !== undefined;
  const dashboard = await openDashboard({
    url: asReader ? config.DASHBOARD_READER_DATABASE_URL! : context.database.url,
    poolMode: context.database.poolMode,
    statementTimeoutMs: config.APPLY_TIMEOUT_MS,
    deadAfterMs: config.WORKER_DEAD_AFTER_MS,
    credentials,
    basePath: "",
    syncs,
    qdrant: await context.qdrant(),
    readConsistency: config.QDRANT_READ_CONSISTENCY,
    log,
  }).catch(async (error) => {
    await context.close();
    throw error;
  });
  const server = await new Promise<ServerType>((resolve, reject) => {
    const started = serve({ fetch: dashboard.app.fetch, hostname: config.DASHBOARD_HOST, port: config.DASHBOARD_PORT }, () => resolve(started));
    started.once("error", reject);
  });
  const mode = readOnly ? `read-only${asReader ? ", as the reader login" : ""} (set DASHBOARD_PASSWORD or DASHBOARD_TOKEN for actions)` : "actions need the configured credentials";
  log.info({ url: `http://${config.DASHBOARD_HOST}:${config.DASHBOARD_PORT}/` }, `dashboard listening; ${mode}`);
  return untilSignal(log, async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await dashboard.close();
    await context.close();
  });
}
