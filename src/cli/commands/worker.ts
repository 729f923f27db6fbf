import { parseCronItems, type CronItem } from "graphile-worker";
import type { DatabasePool } from "slonik";
import { ConfigError, type Config } from "../../config.ts";
import { migrate } from "../../db/migrate.ts";
import { createLivenessPool } from "../../db/pools.ts";
import type { Logger } from "../../log.ts";
import { OpsService } from "../../ops/opsService.ts";
import { createReconcileTask, RECONCILE_TASK } from "../../outbox/reconcileTask.ts";
import { EMBED_CHUNKS } from "../../pipeline/queries.ts";
import { checkModelDimensions, createPipeline } from "../../pipeline/services.ts";
import { loadTasks } from "../../runtime/loadTasks.ts";
import { Worker, workerSettings } from "../../worker.ts";
import { createRelay, openContext, untilSignal } from "../context.ts";

function reconcileCron(config: Config): CronItem[] {
  if (config.RECONCILE_CRON === "off") return [];
  const item: CronItem = { task: RECONCILE_TASK, match: config.RECONCILE_CRON, identifier: RECONCILE_TASK, options: { backfillPeriod: 0, maxAttempts: 3 } };
  try {
    parseCronItems([item]);
  } catch (error) {
    throw new ConfigError(`RECONCILE_CRON: ${(error as Error).message.split("\n", 1)[0]} (got ${JSON.stringify(config.RECONCILE_CRON)})`);
  }
  return [item];
}

/** `pgconverge worker`: migrations, then jobs, heartbeat, sweeper, relay, reconcile cron and metrics until a signal. */
export async function workerCommand(config: Config, log: Logger): Promise<number> {
  const tasks = await loadTasks(config.PGCONVERGE_TASKS_DIR);
  if (tasks.size === 0) log.warn({ directory: config.PGCONVERGE_TASKS_DIR }, "no task files found; only pgconverge's own jobs will run");
  const cronItems = reconcileCron(config);
  const context = await openContext(config, log, config.WORKER_CONCURRENCY, { migrates: true });
  let stopAll = async () => {};
  let livenessPool: DatabasePool | null = null;
  try {
    livenessPool = await createLivenessPool(context.database.url, { statementTimeoutMs: config.APPLY_TIMEOUT_MS });
    await migrate(context.queuePool, log);
    const relay = createRelay(context);
    const pipeline = createPipeline(config);
    // A model or collection of the wrong size is fatal now; an unreachable Qdrant or Ollama is only waited for.
    if (tasks.has(EMBED_CHUNKS)) await checkModelDimensions(config, pipeline.embedder, log);
    await relay.prepareCollection();
    tasks.set(RECONCILE_TASK, createReconcileTask({ pool: context.appPool, qdrant: context.qdrant, collection: config.QDRANT_COLLECTION }));
    const worker = new Worker({
      queuePool: context.queuePool,
      appPool: context.appPool,
      livenessPool,
      log,
      tasks,
      services: { pipeline },
      cronItems,
      ...workerSettings(config),
    });
    const ops = config.METRICS_PORT === 0 ? null : new OpsService({
      host: config.METRICS_HOST,
      port: config.METRICS_PORT,
      log,
      databaseUrl: context.database.url,
      collection: config.QDRANT_COLLECTION,
      deadAfterMs: config.WORKER_DEAD_AFTER_MS,
      tasks: [...tasks.keys()],
      queuePool: context.queuePool,
      appPool: context.appPool,
      relay,
      heartbeat: worker.heartbeat,
    });
    stopAll = async () => {
      await worker.stop();
      await relay.stop();
      await ops?.stop();
    };
    // Before any job is claimed: a metrics port in use stops the worker with exit code 2.
    await ops?.start();
    await worker.start();
    await relay.start();
    return await untilSignal(log, stopAll, worker.done);
  } catch (error) {
    await stopAll();
    throw error;
  } finally {
    await livenessPool?.end();
    await context.close();
  }
}
