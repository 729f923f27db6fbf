import { createHash } from "node:crypto";

export interface ChunkerOptions {
  /** Upper bound of a chunk's length in UTF-16 code units (what `String.length` counts). */
  maxChars: number;
  /** Characters of the previous chunk's end repeated at the start of the next, at sentence boundaries. */
  overlapChars: number;
}

/** 1200 characters fit an embedding model's context with room to spare; 200 of overlap keep a cut sentence whole. */
export const DEFAULT_CHUNKER: ChunkerOptions = { maxChars: 1200, overlapChars: 200 };

export interface Chunk {
  /** Stable id: the same text at the same occurrence in the same document keeps its id. */
  id: string;
  index: number;
  /** Offsets into the document: `content` is exactly `text.slice(start, end)`. */
  start: number;
  end: number;
  content: string;
  contentSha256: string;
}

/** A range of the document, `text.slice(start, end)`. */
interface Span {
  start: number;
  end: number;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

// A fixed locale: boundaries (and so chunk ids) must not depend on the machine's locale.
const sentenceSegmenter = new Intl.Segmenter("en", { granularity: "sentence" });
const wordSegmenter = new Intl.Segmenter("en", { granularity: "word" });
const graphemeSegmenter = new Intl.Segmenter("en", { granularity: "grapheme" });

const WHITESPACE = /\s/;
/** A blank line: two line breaks (CRLF, CR or LF) with only whitespace between. */
const PARAGRAPH_BREAK = /(?:\r\n|\r(?!\n)|\n)\s*?(?:\r\n|\r(?!\n)|\n)/g;
/** A sentence that ends in a full stop of a script written without spaces (。！？), maybe closed by a bracket or quote. */
const SPACELESS_STOP = /(?![\x00-\x7f])\p{Sentence_Terminal}[\p{Pe}\p{Pf}]*$/u;
/**
 * Abbreviations a sentence does not end with although the segmenter breaks after them: titles
 * ("Dr. Smith") and initials ("J. R. Tolkien", "U.S. Army", "e.g. Postgres").
 */
const ABBREVIATION = /(?:^|[^\p{L}\p{N}_.])(?:mr|mrs|ms|dr|prof|sr|jr|st|mt|vs|cf|fig|vol|pp|approx|inc|ltd|corp|dept|gen|col|lt|sgt|rev|hon|\p{L}(?:\.\p{L})*)\.$/iu;
/** Inline code and fenced blocks: a run of backticks up to the next run of the same length (bounded, so a stray backtick costs little). */
const CODE_SPAN = /(`+)[\s\S]{0,2000}?\1/g;

/** The span without its leading and trailing whitespace, or null if nothing is left. */
function trim(text: string, start: number, end: number): Span | null {
  while (start < end && WHITESPACE.test(text[start]!)) start++;
  while (end > start && WHITESPACE.test(text[end - 1]!)) end--;
  return start < end ? { start, end } : null;
}

/** Paragraphs: text between blank lines, trimmed. */
function paragraphs(text: string): Span[] {
  const spans: Span[] = [];
  let start = 0;
  for (const match of text.matchAll(PARAGRAPH_BREAK)) {
    const span = trim(text, start, match.index!);
    if (span) spans.push(span);
    start = match.index! + match[0].length;
  }
  const last = trim(text, start, text.length);
  if (last) spans.push(last);
  return spans;
}

/**
 * Sentences of `text.slice(start, end)`, trimmed. The Unicode segmenter proposes the
 * boundaries; a boundary is kept only where a sentence really ends: before whitespace (or
 * after 。！？), not after an abbreviation, not inside code. So numbers, versions, IP
 * addresses, URLs and dotted identifiers stay in one sentence.
 */
function sentences(text: string, start: number, end: number): Span[] {
  const slice = text.slice(start, end);
  const code = [...slice.matchAll(CODE_SPAN)].map((match) => ({ start: match.index!, end: match.index! + match[0].length }));
  const spans: Span[] = [];
  let open = 0;
  for (const { index, segment } of sentenceSegmenter.segment(slice)) {
    const boundary = index + segment.length;
    if (boundary < slice.length) {
      const sentence = slice.slice(open, boundary);
      const ends = WHITESPACE.test(slice[boundary - 1]!) || SPACELESS_STOP.test(sentence);
      if (!ends || ABBREVIATION.test(sentence.trimEnd()) || code.some((span) => span.start < boundary && boundary < span.end)) continue;
    }
    const span = trim(text, start + open, start + boundary);
    if (span) spans.push(span);
    open = boundary;
  }
  return spans;
}

/** The last boundary of `segmenter` in (start, limit] of text, or null if there is none. */
function lastBoundary(segmenter: Intl.Segmenter, text: string, start: number, limit: number): number | null {
  // A little text past the limit, so the boundary at the limit is the segmenter's, not the slice's end.
  const slice = text.slice(start, limit + 32);
  let last: number | null = null;
  for (const { index } of segmenter.segment(slice)) {
    if (index > limit - start) break;
    if (index > 0) last = start + index;
  }
  return last;
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

/**
 * Cuts a span without whitespace (a very long word, a URL, a line of CJK) into pieces of at
 * most `limit`: at word boundaries (which the segmenter also finds inside CJK), else between
 * characters as the reader sees them, else between code points. A surrogate pair is never cut.
 */
function hardSplit(text: string, span: Span, limit: number): Span[] {
  const out: Span[] = [];
  let { start } = span;
  while (span.end - start > limit) {
    let cut = lastBoundary(wordSegmenter, text, start, start + limit) ?? lastBoundary(graphemeSegmenter, text, start, start + limit) ?? start + limit;
    if (isHighSurrogate(text.charCodeAt(cut - 1))) cut--;
    out.push({ start, end: cut });
    start = cut;
  }
  out.push({ start, end: span.end });
  return out;
}

/** Words of an overlong sentence packed into pieces of at most `limit`; overlong words are cut. */
function splitWords(text: string, sentence: Span, limit: number): Span[] {
  const out: Span[] = [];
  let current: Span | null = null;
  for (const match of text.slice(sentence.start, sentence.end).matchAll(/\S+/g)) {
    const word = { start: sentence.start + match.index!, end: sentence.start + match.index! + match[0].length };
    for (const part of hardSplit(text, word, limit)) {
      if (current && part.end - current.start <= limit) current.end = part.end;
      else {
        if (current) out.push(current);
        current = { ...part };
      }
    }
  }
  if (current) out.push(current);
  return out;
}

/** Pieces of a paragraph no longer than `limit`: the paragraph, else its sentences, else words, else cuts. */
function pieces(text: string, paragraph: Span, limit: number): Span[] {
  if (paragraph.end - paragraph.start <= limit) return [paragraph];
  return sentences(text, paragraph.start, paragraph.end).flatMap((sentence) =>
    sentence.end - sentence.start <= limit ? [sentence] : splitWords(text, sentence, limit),
  );
}

/** Average text between anchors, in chunk lengths: fewer means faster recovery after an edit, but smaller chunks. */
const ANCHOR_SPACING = 2;

/** A chunk is at least maxChars / this long before an anchor may end it (the document's last chunk may be shorter). */
const MIN_CHUNK_FRACTION = 4;

/**
 * Whether a chunk must start at this piece. Greedy packing alone cascades: one paragraph
 * inserted at the top can shift every later chunk boundary, and so change every id. A piece
 * whose own hash says so starts a chunk whatever came before, so boundaries after an edit fall
 * back into step at the next such piece. The odds grow with the piece's length, so there is
 * one such piece every ANCHOR_SPACING chunk lengths of text on average.
 */
function isAnchor(text: string, piece: Span, maxChars: number): boolean {
  const draw = createHash("sha256").update(text.slice(piece.start, piece.end)).digest().readUInt32BE(0) / 2 ** 32;
  return draw < (piece.end - piece.start) / (ANCHOR_SPACING * maxChars);
}

/**
 * Where the chunk after `previous` starts if it repeats the previous chunk's last whole
 * sentences: at most overlapChars of them, never the whole previous chunk, and only if the
 * next chunk still fits (the gap before `next` may be long). Null when nothing fits.
 */
function overlapStart(text: string, previous: Span, next: Span, options: ChunkerOptions): number | null {
  const fitting = sentences(text, previous.start, previous.end).find(
    (sentence) => sentence.start > previous.start && previous.end - sentence.start <= options.overlapChars && next.end - sentence.start <= options.maxChars,
  );
  return fitting?.start ?? null;
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
 * Deterministic chunker. Each chunk is a range of the document (`start`, `end`) and its
 * content is that range of the text, unchanged: nothing is normalised, rejoined or rewritten.
 * Paragraphs (blank-line separated) are packed into chunks of at most maxChars; an overlong
 * paragraph is split at sentences (then words, then, for a word longer than a chunk, between
 * characters). Each chunk after the first starts with the last whole sentences of the
 * previous one, up to overlapChars, so a sentence cut by a boundary is still found whole.
 * Chunks neither start nor end with whitespace; what lies between them is whitespace only.
 * Ids depend on the document, the text and its occurrence number, not on the position:
 * inserting a paragraph keeps the other ids.
 */
export function chunkText(documentId: string, text: string, options: ChunkerOptions = DEFAULT_CHUNKER): Chunk[] {
  // Room for the overlap and a separating character, and for a surrogate pair, in a fresh chunk.
  const pieceLimit = options.maxChars - options.overlapChars - 1;
  if (!Number.isInteger(options.maxChars) || !Number.isInteger(options.overlapChars) || options.overlapChars < 0 || pieceLimit < 2) {
    throw new RangeError("maxChars and overlapChars must be whole numbers with 0 <= overlapChars <= maxChars - 3");
  }
  // An anchor does not end a chunk shorter than this: a heading alone is no chunk worth a vector.
  const minChars = Math.floor(options.maxChars / MIN_CHUNK_FRACTION);
  const spans: Span[] = [];
  let current: Span | null = null;
  for (const paragraph of paragraphs(text)) {
    for (const piece of pieces(text, paragraph, pieceLimit)) {
      if (!current) current = { ...piece };
      else if (piece.end - current.start > options.maxChars || (current.end - current.start >= minChars && isAnchor(text, piece, options.maxChars))) {
        spans.push(current);
        current = { start: overlapStart(text, current, piece, options) ?? piece.start, end: piece.end };
      } else current.end = piece.end;
    }
  }
  if (current) spans.push(current);
  const seen = new Map<string, number>();
  return spans.map(({ start, end }, index) => {
    const content = text.slice(start, end);
    const contentSha256 = sha256(content);
    const occurrence = seen.get(contentSha256) ?? 0;
    seen.set(contentSha256, occurrence + 1);
    return { id: nameUuid(`${documentId}\n${contentSha256}\n${occurrence}`), index, start, end, content, contentSha256 };
  });
}
