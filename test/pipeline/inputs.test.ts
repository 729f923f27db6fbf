import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import t from "tap";
import { decodeText, expandInputs, readInput } from "../../pipeline/inputs.ts";

t.test("decodeText accepts UTF-8 text and says why it refuses anything else", async (t) => {
  t.equal(decodeText(Buffer.from("héllo wörld ✓\n")), "héllo wörld ✓\n");
  t.equal(decodeText(Buffer.from("\uFEFFwith a byte order mark")), "with a byte order mark", "BOM dropped");
  t.same(decodeText(Buffer.alloc(0)), { reason: "empty file" });
  t.same(decodeText(Buffer.from(" \n\t\n")), { reason: "empty (only whitespace)" });
  t.same(decodeText(Buffer.from("text with a\0NUL in it")), { reason: "contains a NUL byte at offset 11, which Postgres text cannot store" });
  t.same(decodeText(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0x6f, 0x6b])), { reason: "not valid UTF-8 (first bad byte at offset 3)" });
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d]), randomBytes(4000)]);
  t.same(decodeText(png), { reason: "binary file, not text" });
  t.same(decodeText(Buffer.from("abc", "utf16le")), { reason: "binary file, not text" }, "UTF-16 is not UTF-8 text");
});

t.test("directories are walked for text and markdown files; missing paths are rejected, not thrown", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-inputs-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "nested", "deeper"), { recursive: true });
  mkdirSync(join(dir, ".git"));
  for (const file of ["a.md", "b.txt", "nested/c.markdown", "nested/deeper/d.MD", "image.png", ".hidden.md", ".git/e.md"]) {
    writeFileSync(join(dir, file), "text");
  }
  const { inputs, rejected } = await expandInputs([dir, join(dir, "image.png"), join(dir, "missing.md"), "-"], "notes");
  t.same(inputs, [
    { kind: "file", path: join(dir, "a.md") },
    { kind: "file", path: join(dir, "b.txt") },
    { kind: "file", path: join(dir, "nested", "c.markdown") },
    { kind: "file", path: join(dir, "nested", "deeper", "d.MD") },
    { kind: "file", path: join(dir, "image.png") },
    { kind: "stdin", source: "notes" },
  ], "hidden entries skipped; an explicitly named file is read whatever its extension");
  t.same(rejected, [{ ok: false, source: join(dir, "missing.md"), reason: "no such file or directory" }]);
});

t.test("readInput enforces the size limit on files and on stdin", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-inputs-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "big.md"), "x".repeat(101));
  writeFileSync(join(dir, "ok.md"), "fine");
  t.match(await readInput({ kind: "file", path: join(dir, "big.md") }, 100), { ok: false, reason: "101 bytes is over INGEST_MAX_BYTES (100)" });
  t.match(await readInput({ kind: "file", path: join(dir, "ok.md") }, 100), {
    ok: true,
    document: { source: join(dir, "ok.md"), content: "fine", contentSha256: /^[0-9a-f]{64}$/ },
  });
  t.match(await readInput({ kind: "stdin", source: "s" }, 100, Readable.from([Buffer.from("x".repeat(60)), Buffer.from("y".repeat(60))])), {
    ok: false,
    reason: /over INGEST_MAX_BYTES \(100 bytes\)/,
  });
  t.match(await readInput({ kind: "stdin", source: "s" }, 100, Readable.from([Buffer.from("from stdin")])), { ok: true, document: { source: "s", content: "from stdin" } });
});
