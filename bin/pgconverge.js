#!/usr/bin/env node
// Installed, the CLI runs the compiled dist/. In the project's own repository it runs the
// TypeScript sources (through tsx on a Node that cannot strip types), resolving "pgconverge"
// (imported by task files) to those same sources, so one copy of each module is loaded. tsx,
// when installed, also loads TypeScript task files on such a Node; without it, JavaScript task
// files need no build step.
import { existsSync } from "node:fs";
import nodeModule from "node:module";
import { stripsTypes } from "./stripsTypes.js";

// Node 22.8+: reuses compiled code (and stripped types) across runs, as tsc's own bin does.
nodeModule.enableCompileCache?.();

const sources = new URL("../src/cli/main.ts", import.meta.url);
// Every resolution also matches the package's "pgconverge-source" export condition, as
// `node --conditions=pgconverge-source` would.
const addCondition = (specifier, context, next) =>
  next(specifier, { ...context, conditions: [...context.conditions, "pgconverge-source"] });

if (existsSync(sources) && stripsTypes && nodeModule.registerHooks) {
  // No tsx: its loader costs a second of CPU a start.
  nodeModule.registerHooks({ resolve: addCondition });
  await import(sources.href);
} else {
  const tsx = await import("tsx/esm/api").catch(() => null);
  tsx?.register();
  if (tsx && existsSync(sources)) {
    // Registered after tsx, so it runs first.
    nodeModule.register(`data:text/javascript,${encodeURIComponent(`export const resolve = ${addCondition}`)}`);
    await import(sources.href);
  } else {
    await import("../dist/cli/main.js");
  }
}
