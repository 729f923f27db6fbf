import { createHash } from "node:crypto";

export interface ChunkerOptions {
  /** Upper bound of a chunk's length in characters (a single longer word is cut). */
  maxChars: number;
  /** Characters of the previous chunk's end repeated at the start of the next, at sentence boundaries. */
  overlapChars: number;
}

export const DEFAULT_CHUNKER: ChunkerOptions = { maxChars: 1200, overlapChars: 200 };

export interface Chunk {
  /** Stable id: the same text at the same occurrence in the same document keeps its id. */
  id: string;
  index: number;
  content: string;
  contentSha256: string;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** Splits text into sentences, keeping each sentence's trailing punctuation and spacing. */
function sentences(paragraph: string): string[] {
  return paragraph.match(/[^.!?]+(?:[.!?]+["')\]]*\s*|$)/g)?.filter((s) => s.trim() !== "") ?? [paragraph];
}

/** Pieces no longer than maxChars: sentences, and words of an overlong sentence, hard cuts as a last resort. */
function pieces(paragraph: string, maxChars: number): string[] {
  if (paragraph.length <= maxChars) return [paragraph];
  return sentences(paragraph).flatMap((sentence) => {
    if (sentence.length <= maxChars) return [sentence];
    const out: string[] = [];
    let current = "";
    for (const word of sentence.split(/(?<=\s)/)) {
      if ((current + word).length > maxChars && current) {
        out.push(current);
        current = "";
      }
      for (let start = 0; start < word.length; start += maxChars) {
        const part = word.slice(start, start + maxChars);
        if ((current + part).length > maxChars) {
          out.push(current);
          current = "";
        }
        current += part;
      }
    }
    if (current) out.push(current);
    return out;
  });
}

/** A UUID derived from a name (sha256, version and variant bits set as for name-based UUIDs). */
export function nameUuid(name: string): string {
  const hex = sha256(name).slice(0, 32).split("");
  hex[12] = "8"; // version 8: custom, name-based
  hex[16] = ((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  const h = hex.join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * Deterministic chunker: paragraphs (blank-line separated) are packed into chunks of at most
 * maxChars; an overlong paragraph is split at sentences (then words). Each chunk after the
 * first starts with the last whole sentences of the previous one, up to overlapChars, so a
 * sentence cut by a boundary is still found whole. Ids depend on the document, the text and
 * its occurrence number, not on the position: inserting a paragraph keeps the other ids.
 */
export function chunkText(documentId: string, text: string, options: ChunkerOptions = DEFAULT_CHUNKER): Chunk[] {
  if (options.overlapChars >= options.maxChars) throw new RangeError("overlapChars must be less than maxChars");
  const paragraphs = text
    .replace(/\r\n?/g, "\n")
    .split(/\n\s*\n/)
    .map((paragraph) => paragraph.replace(/\s+/g, " ").trim())
    .filter((paragraph) => paragraph !== "");
  const contents: string[] = [];
  let current = "";
  // The tail of the previous chunk that `current` starts with; not new content on its own.
  let overlap = "";
  const flush = () => {
    contents.push(current);
    overlap = "";
    for (const sentence of sentences(current).reverse()) {
      if ((sentence + overlap).length > options.overlapChars) break;
      overlap = sentence + overlap;
    }
    overlap = overlap.trim();
    current = overlap;
  };
  for (const paragraph of paragraphs) {
    let first = true;
    // Room for the overlap and its separating space, so every piece fits in a fresh chunk.
    for (const rawPiece of pieces(paragraph, options.maxChars - options.overlapChars - 1)) {
      const piece = rawPiece.trim();
      if (piece === "") continue;
      const separator = current === "" ? "" : current === overlap || !first ? " " : "\n\n";
      first = false;
      if (current !== overlap && (current + separator + piece).length > options.maxChars) {
        flush();
        current = current === "" ? piece : `${current} ${piece}`;
      } else current += separator + piece;
    }
  }
  if (current !== overlap) contents.push(current);
  const seen = new Map<string, number>();
  return contents.map((content, index) => {
    const contentSha256 = sha256(content);
    const occurrence = seen.get(contentSha256) ?? 0;
    seen.set(contentSha256, occurrence + 1);
    return { id: nameUuid(`${documentId}\n${contentSha256}\n${occurrence}`), index, content, contentSha256 };
  });
}
