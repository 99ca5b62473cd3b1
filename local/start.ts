import { SANDBOX } from './ids';
import { startLocalHost } from './host';
import { startSandbox, writeState } from './sandbox';

/**
 * `npm start`: the whole broker on this machine, like `vault server -dev`. Emulated clouds on fixed
 * loopback ports, the functions on http://127.0.0.1:7071/api (PORT overrides). `--emulators-only`
 * starts just the emulators, for `func start` with local.settings.json.
 */
async function main(): Promise<void> {
  const emulatorsOnly = process.argv.includes('--emulators-only');
  const brokerPort = Number(process.env.PORT ?? SANDBOX.ports.broker);
  const sandbox = await startSandbox({ fixedPorts: true, allowMint: true });
  sandbox.applyEnv();
  const host = emulatorsOnly ? undefined : await startLocalHost({ port: brokerPort });
  const brokerUrl = host?.url ?? `http://127.0.0.1:${brokerPort}/api`;
  writeState({ brokerUrl, entraUrl: sandbox.entra.url, startedAt: new Date().toISOString(), pid: process.pid });

  const lines = [
    '',
    emulatorsOnly ? 'Token broker sandbox emulators are running (start the functions with `func start`).' : `Token broker sandbox is running: ${brokerUrl}`,
    '',
    ...Object.entries(sandbox.services).map(([k, v]) => `  ${k.padEnd(30)} ${v}`),
    ...(host ? [`  ${'Functions'.padEnd(30)} ${host.registrations.map((r) => r.name).join(', ')}`] : []),
    '',
    'Try it (in another terminal):',
    '',
    '  GATEWAY=$(npm run -s dev-token -- --client)',
    '  CALLER=$(npm run -s dev-token -- --roles Orders.Read)',
    `  curl -s ${brokerUrl}/health`,
    `  curl -s -X POST ${brokerUrl}/policy/explain -H "Authorization: Bearer $GATEWAY" \\`,
    `       --data-urlencode "subject_token=$CALLER" \\`,
    `       --data-urlencode "resource=cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}"`,
    `  curl -s -X POST ${brokerUrl}/token -H "Authorization: Bearer $GATEWAY" \\`,
    '       --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:token-exchange" \\',
    '       --data-urlencode "subject_token_type=urn:ietf:params:oauth:token-type:access_token" \\',
    '       --data-urlencode "subject_token=$CALLER" \\',
    `       --data-urlencode "resource=cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}"`,
    '',
    'Press Ctrl+C to stop.',
    '',
  ];
  process.stderr.write(lines.join('\n'));

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await host?.close();
    await sandbox.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((e: unknown) => {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE') {
    process.stderr.write(`A sandbox port is already in use (${err.message}). Is another \`npm start\` running? Set PORT to move the broker.\n`);
  } else {
    process.stderr.write(`Sandbox failed to start: ${err.stack ?? String(e)}\n`);
  }
  process.exit(1);
});
