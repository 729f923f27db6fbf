import type { Config } from "../../config.ts";
import { migrate } from "../../db/migrate.ts";
import type { Logger } from "../../log.ts";
import { appMigrations, createRelay, declaredSyncs, withContext, untilSignal } from "../context.ts";

/** `pgconverge relay`: only the outbox relay, until a signal (the worker runs one too). */
export async function relayCommand(config: Config, log: Logger): Promise<number> {
  return withContext(config, log, 2, async (context) => {
    const app = appMigrations(config);
    await migrate(context.queuePool, log, app ? { app } : {});
    const relay = createRelay(context);
    await relay.prepareCollections();
    await relay.start();
    log.info({ relayId: relay.id, collections: declaredSyncs(config).map((sync) => sync.collection) }, "relay started");
    return untilSignal(log, () => relay.stop());
  }, { migrates: true });
}
