// Loaded into every test process (.taprc node-arg) and, through NODE_OPTIONS, into every Node
// process a test starts (workers, CLI commands): a process that emits a Node warning (say a
// MaxListenersExceededWarning, a leak caught in the act) exits non-zero, so the test that ran
// it fails. Node still prints the warning itself, with --trace-warnings' stack.
// Plain JavaScript: it loads before tsx does in the processes tests spawn.
const self = `--import=${import.meta.url}`;
if (!process.env.NODE_OPTIONS?.includes(self)) {
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} ${self} --trace-warnings`.trim();
}

let warned = false;
process.on("warning", () => {
  warned = true;
});
process.on("exit", (code) => {
  if (warned && code === 0) {
    process.stderr.write("a Node warning was emitted (above): failing this process\n");
    process.exitCode = 1;
  }
});
