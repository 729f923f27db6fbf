import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { extname, join, resolve } from "node:path";

/** A file or stdin named on the command line, once directories are expanded. */
export type Input = { kind: "file"; path: string } | { kind: "stdin"; source: string };

export interface TextDocument {
  source: string;
  content: string;
  contentSha256: string;
}

export interface Rejection {
  ok: false;
  source: string;
  reason: string;
}

export type InputResult = { ok: true; document: TextDocument } | Rejection;

/** Extensions read when walking a directory; a file named explicitly is read whatever its name. */
export const TEXT_EXTENSIONS = new Set([".txt", ".text", ".md", ".markdown", ".mdx", ".rst"]);

/**
 * Expands the arguments into inputs: files as given, directories walked recursively for text
 * and markdown files (hidden entries and symlinked directories skipped), `-` as stdin.
 * Paths that do not exist are returned as rejections, not thrown, so the rest go on.
 */
export async function expandInputs(args: readonly string[], stdinSource: string): Promise<{ inputs: Input[]; rejected: Rejection[] }> {
  const inputs: Input[] = [];
  const rejected: Rejection[] = [];
  for (const arg of args) {
    if (arg === "-") {
      inputs.push({ kind: "stdin", source: stdinSource });
      continue;
    }
    const path = resolve(arg);
    const info = await stat(path).catch((error: NodeJS.ErrnoException) => error);
    if (info instanceof Error) rejected.push({ ok: false, source: path, reason: fileError(info) });
    else if (info.isDirectory()) {
      const files = await walk(path);
      if (files.length === 0) rejected.push({ ok: false, source: path, reason: nothingMatched() });
      inputs.push(...files.map((file) => ({ kind: "file" as const, path: file })));
    } else inputs.push({ kind: "file", path });
  }
  return { inputs, rejected };
}

/** Why a directory gave nothing: which names were looked for, so the user can rename or name files explicitly. */
function nothingMatched(): string {
  return `no files to ingest: looked for ${[...TEXT_EXTENSIONS].join(", ")} (hidden entries skipped; name other files explicitly)`;
}

async function walk(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true });
  const files: string[] = [];
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (entry.name.startsWith(".")) continue;
    const path = join(directory, entry.name);
    if (entry.isDirectory()) files.push(...(await walk(path)));
    else if ((entry.isFile() || entry.isSymbolicLink()) && TEXT_EXTENSIONS.has(extname(entry.name).toLowerCase())) files.push(path);
  }
  return files;
}

/** Reads one input and checks that it is text Postgres can store, within the size limit. */
export async function readInput(input: Input, maxBytes: number, stdin: NodeJS.ReadableStream = process.stdin): Promise<InputResult> {
  const source = input.kind === "file" ? input.path : input.source;
  let bytes: Buffer;
  try {
    if (input.kind === "stdin") bytes = await readStream(stdin, maxBytes);
    else {
      const info = await stat(input.path);
      if (!info.isFile()) return { ok: false, source, reason: "not a regular file" };
      if (info.size > maxBytes) return { ok: false, source, reason: tooLarge(info.size, maxBytes) };
      bytes = await readFile(input.path);
    }
  } catch (error) {
    return { ok: false, source, reason: error instanceof TooLargeError ? error.message : fileError(error as NodeJS.ErrnoException) };
  }
  if (bytes.length > maxBytes) return { ok: false, source, reason: tooLarge(bytes.length, maxBytes) };
  const decoded = decodeText(bytes);
  if (typeof decoded !== "string") return { ok: false, source, reason: decoded.reason };
  return { ok: true, document: { source, content: decoded, contentSha256: createHash("sha256").update(decoded).digest("hex") } };
}

/** Share of control bytes in the first block above which a file is binary (random bytes: about 10%; text: near 0). */
const BINARY_CONTROL_SHARE = 0.05;
const SNIFF_BYTES = 8192;

/** The text in `bytes`, or why it is not storable text. */
export function decodeText(bytes: Buffer): string | { reason: string } {
  if (bytes.length === 0) return { reason: "empty file" };
  const head = bytes.subarray(0, SNIFF_BYTES);
  let control = 0;
  for (const byte of head) {
    // C0 controls other than tab, newline, vertical tab, form feed, carriage return and escape.
    if ((byte < 0x20 && ![0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1b].includes(byte)) || byte === 0x7f) control++;
  }
  // At least two such bytes: one stray byte in a tiny file is reported for what it is below.
  if (control > Math.max(1, head.length * BINARY_CONTROL_SHARE)) return { reason: "binary file, not text" };
  const nul = bytes.indexOf(0);
  if (nul >= 0) return { reason: `contains a NUL byte at offset ${nul}, which Postgres text cannot store` };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const lossy = new TextDecoder("utf-8").decode(bytes);
    const offset = Buffer.byteLength(lossy.slice(0, lossy.indexOf("\uFFFD")));
    return { reason: `not valid UTF-8 (first bad byte at offset ${offset})` };
  }
  if (text.trim() === "") return { reason: "empty (only whitespace)" };
  return text;
}

class TooLargeError extends Error {}

const tooLarge = (size: number, maxBytes: number) => `${size.toLocaleString("en")} bytes is over INGEST_MAX_BYTES (${maxBytes.toLocaleString("en")})`;

async function readStream(stream: NodeJS.ReadableStream, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of stream) {
    const buffer = typeof part === "string" ? Buffer.from(part) : part;
    size += buffer.length;
    if (size > maxBytes) throw new TooLargeError(`over INGEST_MAX_BYTES (${maxBytes.toLocaleString("en")} bytes)`);
    parts.push(buffer);
  }
  return Buffer.concat(parts);
}

function fileError(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return error.message;
  }
}
