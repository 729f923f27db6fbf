// The outbox engine knows no application: nothing in src/outbox imports the reference
// pipeline or names its tables. The pipeline reaches the engine through a sync declaration.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const OUTBOX = join(ROOT, "src/outbox");
const PIPELINE = join(ROOT, "src/pipeline");
const IMPORT = /(?:^|\s)(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

t.test("no module of src/outbox imports src/pipeline", async (t) => {
  const files = sources(OUTBOX);
  const imports = files.flatMap((file) =>
    [...readFileSync(file, "utf8").matchAll(IMPORT)]
      .map((match) => match[1] ?? match[2]!)
      .filter((specifier) => specifier.startsWith("."))
      .map((specifier) => ({ file: relative(ROOT, file), specifier, target: resolve(dirname(file), specifier) })),
  );
  t.ok(imports.length >= 10, `${imports.length} relative imports in ${files.length} modules checked`);
  t.same(imports.filter(({ target }) => target.startsWith(PIPELINE)).map(({ file, specifier }) => `${file} imports ${specifier}`), []);
});

t.test("no module of src/outbox names the pipeline's tables in SQL", async (t) => {
  const naming = sources(OUTBOX).filter((file) => /\b(?:from|join|into|update)\s+(?:chunks|documents)\b/i.test(readFileSync(file, "utf8")));
  t.same(naming.map((file) => relative(ROOT, file)), [], "modules that read or write chunks or documents");
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
