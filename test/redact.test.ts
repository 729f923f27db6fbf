import t from "tap";
import { redactCredentials, splitCredentials } from "../src/redact.ts";

t.test("redactCredentials hides the password or token of every URL in a text", async (t) => {
  t.equal(redactCredentials("Ollama at http://user:s3cret@host:11434/api is down"), "Ollama at http://user:***@host:11434/api is down");
  t.equal(redactCredentials("postgres://app:p@ss@db:5432/x and https://tok3n@example.com"), "postgres://app:***@db:5432/x and https://***@example.com", "a raw @ in the password too");
  const line = JSON.stringify({ url: "http://127.0.0.1:6333", contact: "ops@example.com", err: "fetch http://u:pw@h/ failed" });
  t.equal(redactCredentials(line), line.replace("u:pw@", "u:***@"), "one JSON field's URL does not swallow the next field");
  t.equal(redactCredentials("http://127.0.0.1:6333 has none"), "http://127.0.0.1:6333 has none");
});

t.test("splitCredentials moves userinfo into a Basic authorization header", async (t) => {
  t.same(splitCredentials("http://127.0.0.1:11434"), { url: "http://127.0.0.1:11434" });
  t.same(splitCredentials("https://us%40er:p%3Ass@ollama.example:443/"), {
    url: "https://ollama.example",
    authorization: `Basic ${Buffer.from("us@er:p:ss").toString("base64")}`,
  });
  t.same(splitCredentials("user:pw@127.0.0.1:11434"), { url: "http://127.0.0.1:11434", authorization: `Basic ${Buffer.from("user:pw").toString("base64")}` }, "Ollama's host[:port] form");
});
