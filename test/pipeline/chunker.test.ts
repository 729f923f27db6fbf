import t, { type Test } from "tap";
import { chunkText, DEFAULT_CHUNKER, nameUuid, type Chunk, type ChunkerOptions } from "../../pipeline/chunker.ts";
import { generateCorpus } from "../helpers/corpus.ts";
import { seededRandom } from "../helpers/random.ts";

const corpus = (paragraphs: number) =>
  Array.from({ length: paragraphs }, (_, i) => `Paragraph ${i} opens here. It talks about subject ${i * 7} at some length, because chunks need text. ${"Filler words follow. ".repeat((i % 5) + 1)}`).join("\n\n");

/** Prose long enough that its paragraph is split into sentences at the default size. */
const filler = "Words that make this paragraph longer than one piece of a chunk, so that its sentences are split apart. ".repeat(12);

t.test("chunks respect the size cap and cover every sentence", async (t) => {
  const text = `${corpus(40)}\n\n${"A".repeat(2500)} and a sentence with an extremely long word at the end.`;
  const chunks = chunkText("doc-1", text, { maxChars: 300, overlapChars: 80 });
  t.ok(chunks.length > 10);
  t.ok(chunks.every((chunk) => chunk.content.length <= 300 && chunk.content.length > 0), "every chunk within 1..300 chars");
  t.same(chunks.map((chunk) => chunk.index), chunks.map((_, i) => i));
  const all = chunks.map((chunk) => chunk.content).join(" ");
  for (let i = 0; i < 40; i++) t.ok(all.includes(`It talks about subject ${i * 7} at some length`), `sentence of paragraph ${i} kept`);
  t.ok(all.replace(/\s/g, "").includes("A".repeat(2500).slice(0, 200)), "an overlong word is cut, not dropped");
});

t.test("consecutive chunks overlap by whole sentences", async (t) => {
  const chunks = chunkText("doc-1", corpus(10), { maxChars: 250, overlapChars: 100 });
  const overlapping = chunks.slice(1).filter((chunk, i) => {
    const firstSentence = chunk.content.split(/(?<=[.!?])\s/)[0]!;
    return chunks[i]!.content.includes(firstSentence);
  });
  t.ok(overlapping.length >= chunks.length / 2, `${overlapping.length} of ${chunks.length - 1} chunks start with the previous chunk's last sentence`);
});

t.test("deterministic, and ids survive edits elsewhere in the document", async (t) => {
  const text = corpus(30);
  const options = { maxChars: 400, overlapChars: 0 };
  t.same(chunkText("doc-1", text, options), chunkText("doc-1", text, options));
  const before = chunkText("doc-1", text, options);
  const after = chunkText("doc-1", `A brand new opening paragraph.\n\n${text}`, options);
  const kept = before.filter((chunk) => after.some((other) => other.id === chunk.id));
  t.ok(kept.length >= before.length - 2, `${kept.length} of ${before.length} ids unchanged after inserting a paragraph`);
  t.not(chunkText("doc-2", text, options)[0]!.id, before[0]!.id, "ids are per document");
});

t.test("a paragraph inserted among paragraphs of equal length does not shift every later chunk", async (t) => {
  // Greedy packing alone puts three of these in a chunk; one more at the top would move every
  // later boundary by one paragraph, and so change every id.
  const paragraph = (i: number) => `Section ${String(i).padStart(3, "0")} describes one setting of the queue in plain words, with its default and the reason for it. `.repeat(3).trim();
  const paragraphs = Array.from({ length: 60 }, (_, i) => paragraph(i));
  const before = chunkText("doc-1", paragraphs.join("\n\n"));
  const after = new Set(chunkText("doc-1", [paragraph(999), ...paragraphs].join("\n\n")).map((chunk) => chunk.id));
  const kept = before.filter((chunk) => after.has(chunk.id)).length;
  t.ok(kept >= before.length * 0.75, `${kept} of ${before.length} ids unchanged`);
});

t.test("repeated identical chunks get distinct ids; empty text gives no chunks", async (t) => {
  const chunks = chunkText("doc-1", "Same text.\n\nSame text.", { maxChars: 12, overlapChars: 0 });
  t.equal(chunks.length, 2);
  t.not(chunks[0]!.id, chunks[1]!.id);
  t.same(chunkText("doc-1", "  \n\n \r\n "), []);
  t.match(nameUuid("x"), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.throws(() => chunkText("d", "x", { maxChars: 10, overlapChars: 10 }), RangeError);
  t.throws(() => chunkText("d", "x", { maxChars: 10, overlapChars: 8 }), RangeError);
});

/** Chunks `text` and checks that each chunk is the text at its offsets and that `whole` is never cut. */
function keepsWhole(t: Test, text: string, whole: readonly string[], options: ChunkerOptions = DEFAULT_CHUNKER): Chunk[] {
  const chunks = chunkText("doc-1", text, options);
  t.ok(chunks.length > 1, `the text makes several chunks (${chunks.length})`);
  for (const chunk of chunks) t.equal(chunk.content, text.slice(chunk.start, chunk.end), `chunk ${chunk.index} is the text at its offsets`);
  for (const part of whole) t.ok(chunks.some((chunk) => chunk.content.includes(part)), `${JSON.stringify(part)} is stored whole`);
  return chunks;
}

t.test("the texts of the issue are stored as written", async (t) => {
  keepsWhole(t, `${filler}Connect to 127.0.0.1 on port 5432. ${filler}`, ["Connect to 127.0.0.1 on port 5432."]);
  keepsWhole(t, `${filler}It needs Node v20.11.1 or later. ${filler}`, ["It needs Node v20.11.1 or later."]);
  keepsWhole(t, `${filler}Run select graphile_worker.force_unlock_workers(array['w1']) after a crash. ${filler}`, [
    "select graphile_worker.force_unlock_workers(array['w1']) after a crash.",
  ]);
});

t.test("sentences are not split inside URLs, abbreviations, code or numbers", async (t) => {
  const sentences = [
    "See https://example.com/a.b/c?x=1.2&y=v1.0 for the details.",
    "Dr. Smith and Mr. Jones wrote it, e.g. Postgres and i.e. Qdrant.",
    "J. R. R. Tolkien moved to the U.S. Army base.",
    "It costs 3.50 dollars, or 1,234.5 in total.",
    "Call `client.query('select 1. Then 2')` and then `pool.end()` once.",
    "Use obj.method().then((x) => x.y) in the handler.",
  ];
  // Small chunks, so almost every sentence boundary becomes a chunk boundary.
  keepsWhole(t, `${sentences.join(" ")}\n\n${sentences.join(" ")}`, sentences, { maxChars: 90, overlapChars: 0 });
});

t.test("CRLF, tabs, CJK without spaces, emoji and very long words are kept as they are", async (t) => {
  const crlf = `${filler}\r\nA line\tafter a tab and a CRLF.\r\n\r\nNext paragraph\r\n  indented line.`;
  keepsWhole(t, crlf, ["A line\tafter a tab and a CRLF.", "Next paragraph\r\n  indented line."]);

  const cjk = "日本語の文章には空白がありません。".repeat(200);
  const cjkChunks = keepsWhole(t, cjk, ["日本語の文章には空白がありません。"]);
  t.ok(cjkChunks.every((chunk) => chunk.content.length <= DEFAULT_CHUNKER.maxChars));

  const emoji = "👍🏽😀👨‍👩‍👧".repeat(400);
  for (const chunk of keepsWhole(t, emoji, [], { maxChars: 101, overlapChars: 0 })) {
    t.ok(chunk.content.length <= 101, "within the cap");
    t.notOk(/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(chunk.content), `chunk ${chunk.index} does not cut a surrogate pair`);
  }

  const word = Array.from({ length: 5000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join("");
  const wordChunks = keepsWhole(t, `Before. ${word} after.`, []);
  t.equal(wordChunks.map((chunk) => chunk.content).join("").replace(/\s/g, "").includes(word), true, "the long word is cut, not dropped");
});

// Generated documents: every property must hold on each, for several sizes.
const TOKENS = [
  "127.0.0.1", "10.0.0.255:5432", "v20.11.1", "1.2.3-beta.4", "3.14159", "1,000.50", "https://example.com/a.b/c?x=1.2&y=3",
  "http://localhost:6333/collections/chunks.v2", "e.g.", "i.e.", "Dr.", "Mr.", "U.S.", "etc.", "graphile_worker.force_unlock_workers",
  "`pool.query('select 1. Then 2')`", "obj.method().then(x=>x.y)", "config.yaml", "__init__.py", "a_b.c_d.e_f",
];
const WORDS = ["the", "queue", "worker", "commits", "once", "Postgres", "outbox", "vector", "chunk", "relay", "job", "retries"];
const CJK = ["日本語の文です。", "中文句子没有空格。", "次の文！", "本当？", "한국어 문장입니다."];
const EMOJI = ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷"];

function generate(random: () => number): string {
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
  const sentence = () => {
    const roll = random();
    if (roll < 0.1) return Array.from({ length: 1 + Math.floor(random() * 30) }, () => pick(CJK)).join("");
    if (roll < 0.13) return "x".repeat(200 + Math.floor(random() * 3000)); // a word longer than any chunk
    const words = Array.from({ length: 3 + Math.floor(random() * 25) }, () => {
      const r = random();
      return r < 0.25 ? pick(TOKENS) : r < 0.3 ? pick(EMOJI) : pick(WORDS);
    });
    return `${words.join(random() < 0.1 ? "\t" : " ")}${pick([".", ".", "!", "?", "", "..."])}`;
  };
  const paragraph = () =>
    Array.from({ length: 1 + Math.floor(random() * 15) }, sentence)
      .map((s, i) => (i === 0 ? s : `${pick([" ", " ", " ", "  ", "\n", "\r\n"])}${s}`))
      .join("");
  return Array.from({ length: 1 + Math.floor(random() * 25) }, paragraph)
    .map((p, i) => (i === 0 ? p : `${pick(["\n\n", "\r\n\r\n", "\n \t\n", "\n\n\n\n", "\r\n\r\n\r\n"])}${p}`))
    .join("");
}

const SIZES: ChunkerOptions[] = [DEFAULT_CHUNKER, { maxChars: 300, overlapChars: 80 }, { maxChars: 60, overlapChars: 0 }, { maxChars: 50, overlapChars: 15 }];
const SEEDS = 60;

/** Problems of `chunks` as a chunking of `text`, as lines (none when all properties hold). */
function problems(text: string, chunks: readonly Chunk[], options: ChunkerOptions): string[] {
  const found: string[] = [];
  let covered = 0;
  for (const chunk of chunks) {
    const at = `chunk ${chunk.index} [${chunk.start}, ${chunk.end})`;
    if (chunk.content !== text.slice(chunk.start, chunk.end)) found.push(`${at} is not the text at its offsets`);
    if (chunk.content.length === 0 || chunk.content.length > options.maxChars) found.push(`${at} has ${chunk.content.length} chars`);
    if (chunk.content.trim() !== chunk.content) found.push(`${at} starts or ends with whitespace`);
    if (/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(chunk.content)) found.push(`${at} cuts a surrogate pair`);
    if (chunk.start > covered && text.slice(covered, chunk.start).trim() !== "") found.push(`${at}: text before it is in no chunk`);
    if (chunk.index > 0 && !(chunk.start > chunks[chunk.index - 1]!.start && chunk.end > chunks[chunk.index - 1]!.end)) found.push(`${at} is out of order`);
    covered = Math.max(covered, chunk.end);
  }
  if (text.slice(covered).trim() !== "") found.push("the end of the text is in no chunk");
  // A token without spaces, shorter than a piece, is in one sentence and one word: no chunk
  // boundary may cut it. (One with spaces may be cut between words when its sentence is too
  // long for a chunk; the example tests check those inside sentences that fit.)
  const pieceLimit = options.maxChars - options.overlapChars - 1;
  for (const token of TOKENS) {
    if (/\s/.test(token) || token.length > pieceLimit || !text.includes(token)) continue;
    const inText = text.split(token).length - 1;
    const inChunks = chunks.reduce((sum, chunk) => sum + chunk.content.split(token).length - 1, 0);
    if (inChunks < inText) found.push(`${JSON.stringify(token)} is cut (${inText} in the text, ${inChunks} whole in chunks)`);
  }
  return found;
}

t.test("generated documents: chunks are the text at their offsets, cover it, fit and keep tokens whole", async (t) => {
  let checked = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const text = generate(seededRandom(seed));
    for (const options of SIZES) {
      const chunks = chunkText("doc-1", text, options);
      const found = problems(text, chunks, options);
      if (found.length > 0) t.fail(`seed ${seed}, ${JSON.stringify(options)}: ${found.slice(0, 3).join("; ")}`);
      t.same(chunkText("doc-1", text, options).map((chunk) => chunk.id), chunks.map((chunk) => chunk.id), "the same text gives the same ids") || t.comment(`seed ${seed}`);
      checked += chunks.length;
    }
  }
  t.comment(`${SEEDS} documents x ${SIZES.length} sizes, ${checked} chunks checked`);
});

t.test("generated documents: an edit in one paragraph keeps the ids of chunks far from it", async (t) => {
  const options = DEFAULT_CHUNKER;
  // Anchors fall every two chunk lengths on average; eight leave about a 2% chance to one edit.
  const far = 8 * options.maxChars;
  let farChunks = 0;
  let changedFar = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const random = seededRandom(seed);
    const paragraphs = Array.from({ length: 40 }, () => generate(random).split(/\n\s*\n/)[0]!.trim() || "word");
    const k = Math.floor(random() * paragraphs.length);
    const edited = [...paragraphs];
    edited[k] = `An edited paragraph ${seed} with 127.0.0.1 and v1.2.3. ${edited[k]!.slice(0, Math.floor(random() * edited[k]!.length))}`;
    const text = paragraphs.join("\n\n");
    const before = chunkText("doc-1", text, options);
    const after = new Set(chunkText("doc-1", edited.join("\n\n"), options).map((chunk) => chunk.id));
    const editStart = paragraphs.slice(0, k).join("\n\n").length;
    const editEnd = editStart + paragraphs[k]!.length + 2;
    for (const chunk of before) {
      if (chunk.end > editStart - options.maxChars && chunk.start < editEnd + far) continue;
      farChunks++;
      if (!after.has(chunk.id)) changedFar++;
    }
  }
  t.ok(farChunks > 1000, `${farChunks} chunks far from an edit`);
  t.ok(changedFar <= farChunks * 0.01, `${changedFar} of them changed id`);
});

t.test("a heading is not a chunk of its own: only a document's last chunk may be shorter than a quarter of the cap", async (t) => {
  let documents = 0;
  for (const { name, content } of generateCorpus(300)) {
    const chunks = chunkText(name, content, DEFAULT_CHUNKER);
    const short = chunks.slice(0, -1).filter((chunk) => chunk.end - chunk.start < DEFAULT_CHUNKER.maxChars / 4);
    if (short.length > 0) t.fail(`${name}: ${JSON.stringify(short[0]!.content.slice(0, 40))} is ${short[0]!.end - short[0]!.start} chars`);
    documents++;
  }
  t.equal(documents, 300, "documents of the generated corpus checked");
});
