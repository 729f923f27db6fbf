import t from "tap";
import { chunkText, nameUuid } from "../../src/pipeline/chunker.ts";

const corpus = (paragraphs: number) =>
  Array.from({ length: paragraphs }, (_, i) => `Paragraph ${i} opens here. It talks about subject ${i * 7} at some length, because chunks need text. ${"Filler words follow. ".repeat((i % 5) + 1)}`).join("\n\n");

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

t.test("repeated identical chunks get distinct ids; empty text gives no chunks", async (t) => {
  const chunks = chunkText("doc-1", "Same text.\n\nSame text.", { maxChars: 12, overlapChars: 0 });
  t.equal(chunks.length, 2);
  t.not(chunks[0]!.id, chunks[1]!.id);
  t.same(chunkText("doc-1", "  \n\n \r\n "), []);
  t.match(nameUuid("x"), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.throws(() => chunkText("d", "x", { maxChars: 10, overlapChars: 10 }), RangeError);
});
