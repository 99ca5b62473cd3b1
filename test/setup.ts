// @azure/functions warns once per registration outside the Functions host; that is expected in tests.
const warn = console.warn;
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].includes('"@azure/functions" package')) return;
  warn(...args);
};

// Structured logs of the test app contexts (test/helpers/app.ts) go to a silent sink (TEST_LOGS=1 prints them), and
// they re-read settings on every call: tests rewrite process.env between calls.
