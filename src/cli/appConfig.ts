import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ConfigError } from "../config.ts";
import type { AppConfig, CommandDefinition, ServicesContext } from "../api/defineConfig.ts";
import type { TaskRecord } from "../api/runWorker.ts";
import { syncsOf } from "../api/syncs.ts";
import type { Sync } from "../outbox/sync.ts";
import { serviceFlowOf, type ServiceFlowOptions } from "../flow/serviceSettings.ts";

/** The file names looked for in the working directory, in this order. */
export const CONFIG_FILES = ["pgconverge.config.ts", "pgconverge.config.mjs", "pgconverge.config.js"];

/** An application config as the commands use it: the file's fields, checked. */
export interface LoadedConfig {
  /** The file it came from; null without one. */
  file: string | null;
  tasks: string | TaskRecord | undefined;
  services(context: ServicesContext): Promise<object>;
  syncs(): Sync[];
  commands: ReadonlyMap<string, CommandDefinition>;
  /** The file's flow control of external services (FLOW_SERVICE_RATES is laid over it). */
  flow: ServiceFlowOptions;
}

const CORE_ONLY: LoadedConfig = { file: null, tasks: undefined, services: async () => ({}), syncs: () => [], commands: new Map(), flow: {} };

/** `--config FILE`, else PGCONVERGE_CONFIG, else the first of CONFIG_FILES in `cwd`; null for none. */
export function findConfigFile(flag: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string | null {
  const named = flag ?? (env.PGCONVERGE_CONFIG || undefined);
  if (named !== undefined) {
    const file = resolve(cwd, named);
    if (!existsSync(file)) throw new ConfigError(`config file ${named} not found`);
    return file;
  }
  return CONFIG_FILES.map((name) => resolve(cwd, name)).find((file) => existsSync(file)) ?? null;
}

const FIELDS = new Set(["tasks", "services", "syncs", "commands", "flow"]);

/**
 * Imports the config file and checks its shape; every mistake is a ConfigError of one line
 * naming the file. A TypeScript file needs tsx (loaded by the bin when installed).
 */
export async function loadAppConfig(file: string | null, coreCommands: readonly string[]): Promise<LoadedConfig> {
  if (file === null) return CORE_ONLY;
  const fail = (problem: string): never => {
    throw new ConfigError(`${file}: ${problem}`);
  };
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const code = (error as NodeJS.ErrnoException | null)?.code;
    if (file.endsWith(".ts") && code === "ERR_UNKNOWN_FILE_EXTENSION") fail("a TypeScript config file needs tsx (npm install tsx), or write it as .mjs");
    return fail(String((error as Error)?.message ?? error).split("\n", 1)[0]!);
  }
  const config = module.default as AppConfig | undefined;
  if (typeof config !== "object" || config === null) return fail("must export default defineConfig({...})");
  const unknown = Object.keys(config).find((key) => !FIELDS.has(key));
  if (unknown !== undefined) fail(`unknown field ${JSON.stringify(unknown)} (known: ${[...FIELDS].join(", ")})`);
  const { tasks, services, syncs, commands = {}, flow = {} } = config;
  if (typeof flow !== "object" || flow === null) fail("flow must be an object, e.g. { services: { ollama: { rate: 20 } } }");
  withFileOf(file, () => serviceFlowOf(flow));
  if (tasks !== undefined && typeof tasks !== "string" && (typeof tasks !== "object" || tasks === null)) fail("tasks must be a directory or a record of defineTask tasks");
  if (services !== undefined && typeof services !== "function" && (typeof services !== "object" || services === null)) fail("services must be an object or a function returning one");
  if (syncs !== undefined && typeof syncs !== "function" && !Array.isArray(syncs)) fail("syncs must be an array of defineSync declarations or a function returning one");
  if (typeof commands !== "object" || commands === null) fail("commands must be an object of { usage, run }");
  const checked = new Map<string, CommandDefinition>();
  for (const [name, command] of Object.entries(commands)) {
    if (coreCommands.includes(name)) fail(`command ${JSON.stringify(name)} is a pgconverge command; name yours otherwise`);
    if (!/^[a-z][a-z0-9-]*$/.test(name)) fail(`command name ${JSON.stringify(name)} must be lowercase letters, digits and -`);
    if (typeof command?.usage !== "string" || typeof command.run !== "function") fail(`command ${JSON.stringify(name)} needs usage (a string) and run(args, context)`);
    checked.set(name, command);
  }
  const withFile = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof ConfigError) throw new ConfigError(`${file}: ${error.message}`);
      throw error;
    }
  };
  return {
    file,
    tasks: typeof tasks === "string" ? resolve(dirname(file), tasks) : tasks,
    async services(context) {
      if (services === undefined) return {};
      const made = typeof services === "function" ? await services(context) : services;
      if (typeof made !== "object" || made === null) fail("services() must return an object");
      return made;
    },
    syncs: () => withFile(() => syncsOf(typeof syncs === "function" ? syncs(process.env) : (syncs ?? []))),
    commands: checked,
    flow,
  };
}

/** Runs a check whose ConfigError gets the file's name in front. */
function withFileOf(file: string, check: () => unknown): void {
  try {
    check();
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`${file}: ${error.message}`);
    throw error;
  }
}
