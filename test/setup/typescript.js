// Loaded first into every test process (.taprc node-arg) and into the TypeScript programs tests
// start themselves. tsx is registered only on a Node that cannot strip TypeScript's types on its
// own (20, the build machines'), since its loader costs each process about a second of CPU, and
// the suite starts hundreds of them. Node 22.8+ also caches the stripped and compiled code across
// processes (tsx has its own cache).
import nodeModule from "node:module";

// Node strips TypeScript's types without a warning from 22.18 on in 22.x and from 24.3 on (23.6 to
// 24.2 warn at every start, which fails a test).
const [major, minor] = process.versions.node.split(".").map(Number);
const stripsTypes = Boolean(process.features.typescript) && (major === 22 ? minor >= 18 : major > 24 || (major === 24 && minor >= 3));

nodeModule.enableCompileCache?.();
if (!stripsTypes) await import("tsx");
