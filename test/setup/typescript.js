// Loaded first into every test process (.taprc node-arg) and into the TypeScript programs tests
// start themselves. tsx is registered only on a Node that cannot strip TypeScript's types on its
// own (20, the build machines'), since its loader costs each process about a second of CPU, and
// the suite starts hundreds of them. Node 22.8+ also caches the stripped and compiled code across
// processes (tsx has its own cache).
import nodeModule from "node:module";
import { stripsTypes } from "../../bin/stripsTypes.js";

nodeModule.enableCompileCache?.();
if (!stripsTypes) await import("tsx");
