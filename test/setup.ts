// @azure/functions warns once per registration outside the Functions host; that is expected in tests.
const warn = console.warn;
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].includes('"@azure/functions" package')) return;
  warn(...args);
};

// Structured logs go to a silent sink during tests (set TEST_LOGS=1 to see them); tests that assert on
// logs install their own sink with captureLogs().
import { setLogSink } from '../shared/observability/log';
if (!process.env.TEST_LOGS) setLogSink(() => undefined);

// Tests rewrite process.env between calls: re-read settings on every call (production re-reads at most once a second).
import { setSettingsRecheckMs } from '../shared/config/settings';
setSettingsRecheckMs(0);
