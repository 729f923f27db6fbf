#!/usr/bin/env node
// Installed, the CLI runs the compiled dist/. In the project's own repository it runs the
// TypeScript sources through tsx, resolving "pgconverge" (imported by task files) to those same
// sources, so one copy of each module is loaded. tsx, when installed, also loads TypeScript
// task files; without it, JavaScript task files need no build step.
import { existsSync } from "node:fs";
import { register } from "node:module";

const sources = new URL("../src/cli/main.ts", import.meta.url);
const tsx = await import("tsx/esm/api").catch(() => null);
tsx?.register();
if (tsx && existsSync(sources)) {
  // Registered after tsx, so it runs first: every resolution also matches the package's
  // "pgconverge-source" export condition, as `node --conditions=pgconverge-source` would.
  const addCondition = `export function resolve(specifier, context, next) {
    return next(specifier, { ...context, conditions: [...context.conditions, "pgconverge-source"] });
  }`;
  register(`data:text/javascript,${encodeURIComponent(addCondition)}`);
  await import(sources.href);
} else {
  await import("../dist/cli/main.js");
}
