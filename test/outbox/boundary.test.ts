// The core knows no application: nothing in src/ imports the reference pipeline (pipeline/) or
// names its tables, and the pipeline reaches the core only through the package's public entry
// ("pgconverge"), like any application.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SRC = join(ROOT, "src");
const PIPELINE = join(ROOT, "pipeline");
const IMPORT = /(?:^|\s)(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

function importsOf(files: string[]) {
  return files.flatMap((file) =>
    [...readFileSync(file, "utf8").matchAll(IMPORT)]
      .map((match) => match[1] ?? match[2]!)
      .map((specifier) => ({ file: relative(ROOT, file), specifier, target: specifier.startsWith(".") ? resolve(dirname(file), specifier) : specifier })),
  );
}

t.test("no module of src/ imports pipeline/", async (t) => {
  const imports = importsOf(sources(SRC)).filter(({ specifier }) => specifier.startsWith("."));
  t.ok(imports.length >= 100, `${imports.length} relative imports checked`);
  t.same(imports.filter(({ target }) => target.startsWith(PIPELINE) || target.includes("/pipeline/")).map(({ file, specifier }) => `${file} imports ${specifier}`), []);
});

t.test("no module of src/ names the pipeline's tables in SQL", async (t) => {
  const naming = sources(SRC).filter((file) => /\b(?:from|join|into|update|table)\s+(?:chunks|documents)\b/i.test(readFileSync(file, "utf8")));
  t.same(naming.map((file) => relative(ROOT, file)), [], "modules that read or write chunks or documents");
});

t.test("the pipeline and its task files reach the core only through \"pgconverge\"", async (t) => {
  const files = [...sources(PIPELINE), ...sources(join(ROOT, "tasks")), join(ROOT, "pgconverge.config.ts")];
  const imports = importsOf(files);
  t.ok(imports.some(({ specifier }) => specifier === "pgconverge"), "they use the public entry");
  t.same(imports.filter(({ target }) => target.startsWith(SRC)).map(({ file, specifier }) => `${file} imports ${specifier}`), []);
});

t.test("no migration of pgconverge's own (sql/) names the pipeline's tables", async (t) => {
  // sql/legacy-0.1/ is 0.1's history, read only to upgrade a 0.1 database; the pipeline's
  // tables live in its own migration set (pipeline/sql).
  const dir = join(ROOT, "sql");
  const files = readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isFile() && entry.name.endsWith(".sql"));
  t.ok(files.length >= 3, `${files.length} migrations checked`);
  const naming = files.filter((entry) => /\b(?:documents?|chunks?)\b/i.test(readFileSync(join(dir, entry.name), "utf8")));
  t.same(naming.map((entry) => entry.name), [], "files that name documents or chunks");
});
