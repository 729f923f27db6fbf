// A deterministic generated corpus: plausible prose, plus one phrase unique to each document.
import { seededRandom } from "./random.ts";

const WORDS = (
  "the a of and to in is that for it as with was on be by this are from at or an which have not had but were all " +
  "they one their been has more when who will no if out so said what up its about into than them can only other new " +
  "some could time these two may then do first any my now such like our over man me even most made after also did many " +
  "before must through back years where much your way well down should because each just those people how too little state " +
  "good very make world still own see men work long get here between both life being under never day same another know while " +
  "last might us great old year off come since against go came right used take three states himself few house use during " +
  "without again place around however home small found thought went say part once general high upon school every"
).split(" ");

export interface CorpusDocument {
  name: string;
  content: string;
  /** Words found in this document only. */
  phrase: string;
}

export function generateCorpus(count: number, seed = 1): CorpusDocument[] {
  const next = seededRandom(seed);
  const pick = (n: number) => Array.from({ length: n }, () => WORDS[Math.floor(next() * WORDS.length)]!);
  const sentence = () => {
    const words = pick(6 + Math.floor(next() * 8));
    return `${words[0]![0]!.toUpperCase()}${words.join(" ").slice(1)}.`;
  };
  return Array.from({ length: count }, (_, i) => {
    const phrase = `quux${i} frob${i} zorp${i}`;
    const paragraphs = Array.from({ length: 2 + Math.floor(next() * 4) }, () =>
      Array.from({ length: 3 + Math.floor(next() * 6) }, sentence).join(" "),
    );
    paragraphs.splice(Math.floor(next() * paragraphs.length), 0, `The code words are ${phrase}, again ${phrase}, once more ${phrase}.`);
    return { name: `doc-${String(i).padStart(4, "0")}.md`, content: `# Document ${i}\n\n${paragraphs.join("\n\n")}\n`, phrase };
  });
}
