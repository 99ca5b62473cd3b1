import { rmSync } from 'node:fs';
import { SANDBOX } from './ids';
import { startLocalHost, type LocalHost } from './host';
import { createRunDir, linkCurrent, startSandbox, unlinkCurrent, writeState, type Sandbox } from './sandbox';
import { removeWithThisProcess } from './orphan-reaper';

/**
 * `npm start`: the whole broker on this machine, like `vault server -dev`. Emulated clouds on fixed
 * loopback ports, the functions on http://127.0.0.1:7071/api (PORT overrides; PORT=0 picks a free one).
 * `--emulators-only` starts just the emulators, for `func start` with local.settings.json.
 * `--ephemeral-ports` puts every emulator on a free port (several sandboxes on one machine), and
 * SANDBOX_CLOUDSQL_HOST the Cloud SQL instance on another loopback address (it always listens on 3307).
 *
 * Each run writes its files (CA bundles, sandbox.json) to its own directory, .sandbox/run-PID-RANDOM/,
 * removed on exit; a fixed-port run links .sandbox/current to it. Ctrl+C (SIGINT) or SIGTERM stops
 * everything within STOP_DEADLINE_MS; a second Ctrl+C, or the deadline, forces the exit (PostgreSQL is
 * killed and its data directory removed either way).
 */
const STOP_DEADLINE_MS = 5000;

const LOOPBACK = /^127\.(?:\d{1,3})\.(?:\d{1,3})\.(?:\d{1,3})$/;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--emulators-only' && a !== '--ephemeral-ports');
  if (unknown.length) throw new Error(`Unknown option ${unknown[0]}; use --emulators-only and/or --ephemeral-ports.`);
  const emulatorsOnly = args.includes('--emulators-only');
  const ephemeral = args.includes('--ephemeral-ports');
  const brokerPort = Number(process.env.PORT ?? SANDBOX.ports.broker);
  if (!Number.isInteger(brokerPort) || brokerPort < 0 || brokerPort > 65535)
    throw new Error(`PORT must be 0-65535, got ${process.env.PORT}.`);
  const cloudSqlHost = process.env.SANDBOX_CLOUDSQL_HOST ?? '127.0.0.1';
  if (!LOOPBACK.test(cloudSqlHost))
    throw new Error(`SANDBOX_CLOUDSQL_HOST must be a 127.x.y.z loopback address, got ${cloudSqlHost}.`);

  const runDir = createRunDir();
  const running: { sandbox?: Sandbox; host?: LocalHost } = {};
  let stopping = false;
  removeWithThisProcess(runDir); // its CA keys, should this process be killed
  const removeRunDir = () => {
    if (!ephemeral) unlinkCurrent(runDir);
    rmSync(runDir, { recursive: true, force: true });
  };
  process.once('exit', removeRunDir);
  const force = (why: string) => {
    process.stderr.write(`\n${why}: forcing the exit.\n`);
    process.exit(130); // the exit handlers kill PostgreSQL and remove its data directory and this run's files
  };
  const stop = (signal: string) => {
    if (stopping) return force(`Second ${signal}`);
    stopping = true;
    process.stderr.write(`\n${signal}: stopping (again to force)…\n`);
    const deadline = setTimeout(() => force(`Not stopped within ${STOP_DEADLINE_MS / 1000} s`), STOP_DEADLINE_MS);
    deadline.unref();
    void (async () => {
      await running.host?.close().catch(() => undefined);
      await running.sandbox?.stop().catch(() => undefined);
      process.exit(0);
    })();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  const sandbox = (running.sandbox = await startSandbox({
    fixedPorts: !ephemeral,
    allowMint: true,
    stateDir: runDir,
    storage: true, // the live policy (admin API) and the rotation lease, on Azurite

    ...(ephemeral
      ? { cloudSql: { host: cloudSqlHost } }
      : cloudSqlHost !== '127.0.0.1'
        ? { cloudSql: { host: cloudSqlHost } }
        : {}),
  }));
  if (stopping) return; // Ctrl+C while starting: stop() takes it from here
  sandbox.applyEnv();
  const host = (running.host = emulatorsOnly ? undefined : await startLocalHost({ port: brokerPort }));
  const brokerUrl = host?.url ?? `http://127.0.0.1:${brokerPort}/api`;
  writeState(runDir, {
    brokerUrl,
    entraUrl: sandbox.entra.url,
    startedAt: new Date().toISOString(),
    pid: process.pid,
    postgresPid: sandbox.postgres?.pid,
    postgresDataDir: sandbox.postgres?.dataDir,
    azuritePid: sandbox.storage?.pid,
    runDir,
  });
  if (!ephemeral) linkCurrent(runDir);

  const lines = [
    '',
    emulatorsOnly
      ? 'Token broker sandbox emulators are running (start the functions with `func start`).'
      : `Token broker sandbox is running: ${brokerUrl}`,
    '',
    ...Object.entries(sandbox.services).map(([k, v]) => `  ${k.padEnd(30)} ${v}`),
    ...(host ? [`  ${'Functions'.padEnd(30)} ${host.registrations.map((r) => r.name).join(', ')}`] : []),
    `  ${"This run's files".padEnd(30)} ${runDir}`,
    '',
    'Try it (in another terminal):',
    '',
    ...(ephemeral ? [`  export SANDBOX_STATE_DIR=${runDir}`] : []),
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
}

main().catch((e: unknown) => {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE') {
    process.stderr.write(
      `A sandbox port is already in use (${err.message}). Is another \`npm start\` running? Set PORT to move the broker.\n`,
    );
  } else {
    process.stderr.write(`Sandbox failed to start: ${err.stack ?? String(e)}\n`);
  }
  process.exit(1);
});
