import type { Config } from "../../config.ts";
import { serviceFlowFromConfig } from "../../flow/serviceSettings.ts";
import { reconcileCronItems, syncOptionsFromConfig } from "../../api/syncs.ts";
import type { Logger } from "../../log.ts";
import { loadTasks } from "../../runtime/loadTasks.ts";
import type { LoadedConfig } from "../appConfig.ts";
import { appMigrations, openContext, untilSignal } from "../context.ts";

/**
 * `pgconverge worker`: a worker built by the public runWorker's own path (createWorker) from
 * the environment's settings and the task directory, plus what the CLI runs beside it: the
 * relay, the reconcile cron and the metrics server.
 */
export async function workerCommand(config: Config, log: Logger, app: LoadedConfig, options: { tasksDir?: string } = {}): Promise<number> {
  // Loaded here, not with the CLI: the other commands start without the worker's modules.
  const [{ createWorker, workerSettingsFromConfig }, { OpsService }, { RECONCILE_TASK }] = await Promise.all([
    import("../../api/runWorker.ts"),
    import("../../ops/opsService.ts"),
    import("../../outbox/reconcileTask.ts"),
  ]);
  const given = options.tasksDir ?? app.tasks ?? config.PGCONVERGE_TASKS_DIR;
  const tasks = typeof given === "string" ? await loadTasks(given) : new Map(Object.entries(given));
  if (tasks.size === 0) log.warn({ directory: given }, "no task files found; only pgconverge's own jobs will run");
  const syncs = app.syncs();
  // Checked here to name the variable; runWorker's own check names its option.
  reconcileCronItems(config.RECONCILE_CRON, "RECONCILE_CRON");
  const context = await openContext(config, log, config.WORKER_CONCURRENCY, { migrates: true });
  let stopAll = async () => {};
  let closeWorker = async () => {};
  try {
    // The config file's services (its factory may check them: a wrong setting stops the start here).
    const services = await app.services({ env: process.env, log, tasks: [...tasks.keys()] });
    const migrations = appMigrations(config);
    const { worker, relay, close } = await createWorker(
      {
        appMigrations: migrations,
        pool: context.queuePool,
        databaseUrl: context.database.url,
        databasePoolMode: context.database.poolMode,
        ...(context.database.directUrl === undefined ? {} : { databaseDirectUrl: context.database.directUrl }),
        tasks: Object.fromEntries(tasks),
        services,
        logger: log,
        ...workerSettingsFromConfig(config),
        // Services: the config file's rates with the environment's over them; concurrency: the environment's over the tasks' own.
        flow: {
          ...app.flow,
          ...serviceFlowFromConfig(config, app.flow.services),
          concurrency: config.FLOW_TASK_CONCURRENCY ?? {},
          queues: config.FLOW_QUEUE_CONCURRENCY ?? {},
        },
        ...syncOptionsFromConfig(config, syncs),
      },
      { appPool: context.appPool, poolModeChecked: true },
    );
    closeWorker = close;
    // A collection of the wrong size is fatal now; an unreachable Qdrant is only waited for.
    await relay?.prepareCollections();
    const ops = config.METRICS_PORT === 0 ? null : new OpsService({
      host: config.METRICS_HOST,
      port: config.METRICS_PORT,
      log,
      databaseUrl: context.database.url,
      poolMode: context.database.poolMode,
      // The gauges follow one collection: the first sync's (per-sync gauges are still to come).
      collection: syncs[0]?.collection ?? "",
      deadAfterMs: config.WORKER_DEAD_AFTER_MS,
      tasks: [...tasks.keys(), ...(syncs.length > 0 ? [RECONCILE_TASK] : [])],
      queuePool: context.queuePool,
      appPool: context.appPool,
      relay: relay ?? undefined,
      heartbeat: worker.heartbeat,
      migrations: { app: migrations },
    });
    // Before any job is claimed: a metrics port in use stops the worker with exit code 2.
    const starting = (async () => {
      await ops?.start();
      await worker.start();
      await relay?.start();
    })();
    const started = starting.catch(() => {});
    stopAll = async () => {
      // A signal during startup stops the services once they are up, not halfway.
      await started;
      await worker.stop();
      await relay?.stop();
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
