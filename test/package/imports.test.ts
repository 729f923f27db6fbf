// The test application (test/package/app) may import the package only by its public entry
// point: a deep path ("pgconverge/dist/...") or a relative path out of the app would let the
// install test pass on something a user cannot do.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";

const APP = fileURLToPath(new URL("./app/", import.meta.url));
const ALLOWED = new Set(["pgconverge", "pg", "slonik", "zod"]);

/** Every module specifier of a file: static imports and exports, and dynamic import(). */
export function specifiers(source: string): string[] {
  const found = [
    ...source.matchAll(/\b(?:import|export)\s[^;]*?\bfrom\s*["']([^"']+)["']/g),
    ...source.matchAll(/\bimport\s*["']([^"']+)["']/g),
    ...source.matchAll(/\bimport\s*\(\s*["']([^"']+)["']/g),
  ];
  return found.map((match) => match[1]!);
}

t.test("the specifier scan finds deep and relative imports", async (t) => {
  t.same(specifiers(`import { x } from "pgconverge/dist/worker.js";\nimport "../../src/index.ts";\nawait import('pgconverge/x');`), [
    "pgconverge/dist/worker.js",
    "../../src/index.ts",
    "pgconverge/x",
  ]);
});

t.test("the test application imports pgconverge by its public entry point only", async (t) => {
  const files = readdirSync(APP, { recursive: true, encoding: "utf8" }).filter((file) => /\.(m?js|cjs|ts)$/.test(file));
  t.ok(files.length > 0);
  for (const file of files) {
    for (const specifier of specifiers(readFileSync(join(APP, file), "utf8"))) {
      t.ok(specifier.startsWith("node:") || ALLOWED.has(specifier), `${file}: ${specifier}`);
    }
  }
});
