import { readdirSync } from "node:fs";
import { basename, extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isDefinedTask, type DefinedTask } from "./defineTask.ts";

const TASK_FILE = /^[A-Za-z_][A-Za-z0-9_]*\.(ts|mts|js|mjs)$/;

export class TaskLoadError extends Error {
  override name = "TaskLoadError";
}

/**
 * Loads every task file of a directory (graphile-worker's convention: one task per file,
 * the file name is the identifier). Each file default-exports `defineTask(...)`.
 */
export async function loadTasks(directory: string): Promise<Map<string, DefinedTask>> {
  const dir = resolve(directory);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    throw new TaskLoadError(`task directory ${dir} cannot be read`);
  }
  const tasks = new Map<string, DefinedTask>();
  for (const name of names.filter((file) => TASK_FILE.test(file) && !file.endsWith(".d.ts")).sort()) {
    const identifier = basename(name, extname(name));
    if (tasks.has(identifier)) throw new TaskLoadError(`task ${identifier} is defined by two files in ${dir}`);
    const module = (await import(pathToFileURL(`${dir}/${name}`).href)) as { default?: unknown };
    if (!isDefinedTask(module.default)) {
      throw new TaskLoadError(`${dir}/${name} must default-export defineTask({...})`);
    }
    tasks.set(identifier, module.default);
  }
  return tasks;
}
