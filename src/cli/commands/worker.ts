import { parseCronItems, type CronItem } from "graphile-worker";
import { ConfigError, type Config } from "../../config.ts";
import { createWorker, workerSettingsFromConfig } from "../../api/runWorker.ts";
import type { Logger } from "../../log.ts";
import { OpsService } from "../../ops/opsService.ts";
import { createReconcileTask, RECONCILE_TASK } from "../../outbox/reconcileTask.ts";
import { EMBED_CHUNKS } from "../../pipeline/queries.ts";
import { checkModelDimensions, createPipeline, type PipelineServices } from "../../pipeline/services.ts";
import { loadTasks } from "../../runtime/loadTasks.ts";
import { appMigrations, createRelay, declaredSyncs, openContext, untilSignal } from "../context.ts";

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

/**
 * `pgconverge worker`: a worker built by the public runWorker's own path (createWorker) from
 * the environment's settings and the task directory, plus what the CLI runs beside it: the
 * relay, the reconcile cron and the metrics server.
 */
export async function workerCommand(config: Config, log: Logger, options: { tasksDir?: string } = {}): Promise<number> {
  const tasksDir = options.tasksDir ?? config.PGCONVERGE_TASKS_DIR;
  const tasks = await loadTasks(tasksDir);
  if (tasks.size === 0) log.warn({ directory: tasksDir }, "no task files found; only pgconverge's own jobs will run");
  const cronItems = reconcileCron(config);
  const context = await openContext(config, log, config.WORKER_CONCURRENCY, { migrates: true });
  let stopAll = async () => {};
  let closeWorker = async () => {};
  try {
    const relay = createRelay(context);
    // The reference pipeline's services; other task directories simply do not use them.
    const pipeline = createPipeline(config);
    const app = appMigrations(config);
    const { worker, close } = await createWorker(
      {
        appMigrations: app,
        pool: context.queuePool,
        databaseUrl: context.database.url,
        tasks: Object.fromEntries(tasks),
        services: { pipeline } satisfies PipelineServices,
        logger: log,
        ...workerSettingsFromConfig(config),
      },
      {
        appPool: context.appPool,
        cronItems,
        extraTasks: new Map([[RECONCILE_TASK, createReconcileTask({ pool: context.appPool, qdrant: context.qdrant, syncs: declaredSyncs(config) })]]),
      },
    );
    closeWorker = close;
    // A model or collection of the wrong size is fatal now; an unreachable Qdrant or Ollama is only waited for.
    if (tasks.has(EMBED_CHUNKS)) await checkModelDimensions(config, pipeline.embedder, log);
    await relay.prepareCollections();
    const ops = config.METRICS_PORT === 0 ? null : new OpsService({
      host: config.METRICS_HOST,
      port: config.METRICS_PORT,
      log,
      databaseUrl: context.database.url,
      collection: config.QDRANT_COLLECTION,
      deadAfterMs: config.WORKER_DEAD_AFTER_MS,
      tasks: [...tasks.keys(), RECONCILE_TASK],
      queuePool: context.queuePool,
      appPool: context.appPool,
      relay,
      heartbeat: worker.heartbeat,
      migrations: { app },
    });
    // Before any job is claimed: a metrics port in use stops the worker with exit code 2.
    const starting = (async () => {
      await ops?.start();
      await worker.start();
      await relay.start();
    })();
    const started = starting.catch(() => {});
    stopAll = async () => {
      // A signal during startup stops the services once they are up, not halfway.
      await started;
      await worker.stop();
      await relay.stop();
      await ops?.stop();
    };
    // Signals are handled from before the worker registers: the default action of a Ctrl-C during
    // startup would kill it registered, and its jobs would wait for the dead-worker threshold.
    const exitCode = untilSignal(log, stopAll, starting.then(() => worker.done, () => new Promise(() => {})));
    await starting;
    return await exitCode;
  } catch (error) {
    await stopAll();
    throw error;
  } finally {
    await closeWorker();
    await context.close();
  }
}
