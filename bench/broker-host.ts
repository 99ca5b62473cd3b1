import { startLocalHost } from '../local/host';
import { gcNow, telemetryWithoutExporter } from './telemetry-off';

/**
 * The broker alone in its own process (the sandbox's emulators run in bench/server.ts): what (9) measures the
 * memory of, so the emulators' own state (20,000 Cosmos users, every token they issued) is not counted. Its
 * environment is the sandbox's app settings; its stdout (the log lines) goes to a file.
 */
async function main(): Promise<void> {
  const stopTelemetry = telemetryWithoutExporter();
  const host = await startLocalHost({ port: 0 });
  process.on('message', (msg: { cmd: string }) => {
    if (msg.cmd === 'rss') {
      gcNow();
      const m = process.memoryUsage();
      process.send?.({
        rss: m.rss,
        heapUsed: m.heapUsed,
        heapTotal: m.heapTotal,
        external: m.external,
        arrayBuffers: m.arrayBuffers,
      });
    }
    if (msg.cmd === 'stop') {
      void (async () => {
        await host.close();
        await stopTelemetry().catch(() => undefined);
        process.exit(0);
      })();
    }
  });
  process.send?.({ ready: host.url });
}

main().catch((e: unknown) => {
  process.stderr.write(`bench broker host failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
