import { readdirSync } from "node:fs";
import { basename, extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isDefinedTask, type AnyTask } from "./defineTask.ts";

const TASK_FILE = /^[A-Za-z_][A-Za-z0-9_]*\.(ts|mts|js|mjs)$/;

export class TaskLoadError extends Error {
  override name = "TaskLoadError";
}

/** Imports a task file; a TypeScript one that Node cannot load gets one line saying what to install. */
async function importTaskFile(file: string): Promise<unknown> {
  try {
    return await import(pathToFileURL(file).href);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ERR_UNKNOWN_FILE_EXTENSION" && /\.m?ts$/.test(file)) {
      throw new TaskLoadError(`${file}: TypeScript task files need tsx (npm install tsx), or compile them to .js`);
    }
    throw error;
  }
}

/**
 * Loads every task file of a directory (graphile-worker's convention: one task per file,
 * the file name is the identifier). Each file default-exports `defineTask(...)`.
 */
export async function loadTasks(directory: string): Promise<Map<string, AnyTask>> {
  const dir = resolve(directory);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    throw new TaskLoadError(`task directory ${dir} cannot be read`);
  }
  const tasks = new Map<string, AnyTask>();
  for (const name of names.filter((file) => TASK_FILE.test(file) && !file.endsWith(".d.ts")).sort()) {
    const identifier = basename(name, extname(name));
    if (tasks.has(identifier)) throw new TaskLoadError(`task ${identifier} is defined by two files in ${dir}`);
    const module = (await importTaskFile(`${dir}/${name}`)) as { default?: unknown };
    if (!isDefinedTask(module.default)) {
      throw new TaskLoadError(`${dir}/${name} must default-export defineTask({...})`);
    }
    if (module.default.identifier !== undefined && module.default.identifier !== identifier) {
      throw new TaskLoadError(`${dir}/${name} defines identifier ${JSON.stringify(module.default.identifier)}; rename the file or the identifier`);
    }
    tasks.set(identifier, module.default);
  }
  return tasks;
}
