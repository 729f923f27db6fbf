import { ConfigError, type Config } from "../../config.ts";
import { migrate } from "../../api/migrate.ts";
import { migrationUrlOf } from "../../db/connections.ts";
import type { Logger } from "../../log.ts";
import { appMigrations, createRelay, withContext, untilSignal } from "../context.ts";
import type { Sync } from "../../outbox/sync.ts";

/** `pgconverge relay`: only the outbox relay, until a signal (the worker runs one too). */
export async function relayCommand(config: Config, log: Logger, syncs: readonly Sync[]): Promise<number> {
  if (syncs.length === 0) throw new ConfigError("relay: no syncs declared; declare them in the config file (syncs)");
  return withContext(config, log, 2, async (context) => {
    const app = appMigrations(config);
    await migrate({ pool: context.queuePool, databaseDirectUrl: migrationUrlOf(context.database) ?? undefined, logger: log, ...(app ? { app } : {}) });
    const relay = await createRelay(context, syncs);
    await relay.prepareCollections();
    await relay.start();
    log.info({ relayId: relay.id, collections: syncs.map((sync) => sync.collection) }, "relay started");
    return untilSignal(log, () => relay.stop());
  }, { migrates: true });
}
