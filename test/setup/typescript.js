// Loaded first into every test process (.taprc node-arg) and into the TypeScript programs tests
// start themselves. Node 22.18+ and 24 strip TypeScript's types on their own; tsx is registered
// only on a Node that cannot (20, the build machines'), since its loader costs each process about
// a second of CPU, and the suite starts hundreds of them.
// Node 22.1+ also caches the stripped and compiled code across processes (tsx has its own cache).
import nodeModule from "node:module";

nodeModule.enableCompileCache?.();
if (!process.features.typescript) await import("tsx");
