import { ManagedIdentityCredential } from '@azure/identity';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { metrics, trace } from '@opentelemetry/api';
import { MeterProvider, MetricReader, DataPointType, type MetricData } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

import { issuedTokens } from '../../../local/emulators/issued-tokens';
import { enableOpenTelemetry, METRIC, Telemetry } from '../../../shared/observability/telemetry';
import {
  ACCESS_TOKEN_TYPE,
  CLOUDSQL_RESOURCE,
  SANDBOX,
  startFixture,
  TOKEN_EXCHANGE,
  type Fixture,
} from '../../helpers/foundation';
import { captureLogs, invoke } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');
const adminHandler = testApp.handler('adminRotate');

/**
 * Telemetry through the real handlers and the sandbox: an in-memory OpenTelemetry MeterProvider (the
 * SDK @azure/monitor-opentelemetry itself uses) receives what the broker records. Azure Monitor itself is
 * replaced by a recording stand-in (a third-party module: it would export to the internet), to prove it
 * is loaded only, and exactly once, when APPLICATIONINSIGHTS_CONNECTION_STRING is set.
 */

const monitorCalls: unknown[] = [];
let monitorLoaded = 0;
jest.mock('@azure/monitor-opentelemetry', () => {
  monitorLoaded++;
  return { useAzureMonitor: (opts: unknown) => monitorCalls.push(opts) };
});

class TestReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const ROOT = resolve(__dirname, '..', '..', '..');
const reader = new TestReader();
const meterProvider = new MeterProvider({ readers: [reader] });
const spans = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });

let f: Fixture;
const logs = captureLogs();

beforeAll(async () => {
  metrics.setGlobalMeterProvider(meterProvider);
  trace.setGlobalTracerProvider(tracerProvider);
  f = await startFixture();
});

afterAll(async () => {
  logs.restore();
  await meterProvider.shutdown();
  await tracerProvider.shutdown();
  metrics.disable();
  trace.disable();
  await f?.stop();
});

async function collect(): Promise<MetricData[]> {
  const { resourceMetrics } = await reader.collect();
  return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
}

type Point = { attributes: Record<string, unknown>; value: number };

/** The data points of one metric: counters' values, histograms' counts. */
async function points(name: string): Promise<Point[]> {
  const m = (await collect()).find((x) => x.descriptor.name === name);
  if (!m) return [];
  return m.dataPoints.map((p) => ({
    attributes: p.attributes,
    value: m.dataPointType === DataPointType.HISTOGRAM ? (p.value as { count: number }).count : (p.value as number),
  }));
}

async function valueOf(name: string, attrs: Record<string, string>): Promise<number> {
  const match = (await points(name)).find((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v));
  return match?.value ?? 0;
}

async function exchange(subject: string) {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${await f.gateway()}` },
    form: {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subject,
      subject_token_type: ACCESS_TOKEN_TYPE,
      resource: CLOUDSQL_RESOURCE,
    },
  });
}

describe('with an OpenTelemetry MeterProvider registered', () => {
  beforeAll(() => {
    enableOpenTelemetry();
  });

  test('a Cloud SQL exchange records issuance latency, a cache miss then a hit, and each upstream call', async () => {
    testApp.renew();
    const first = await exchange(await f.caller());
    const second = await exchange(await f.caller());
    expect([first.status, second.status]).toEqual([200, 200]);

    const issued = (await points(METRIC.issuanceDuration)).find(
      (p) => p.attributes.kind === 'cloudsql' && p.attributes.outcome === 'issued',
    );
    expect(issued?.value).toBe(2);
    expect(await valueOf(METRIC.cache, { kind: 'cloudsql', result: 'miss' })).toBe(1);
    expect(await valueOf(METRIC.cache, { kind: 'cloudsql', result: 'hit' })).toBe(1);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'managed-identity', outcome: 'ok' })).toBe(1);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'google-sts', outcome: 'ok' })).toBe(1);
    // two impersonations: the login token the caller gets, and the broker-internal Admin-API token of the same
    // account for the instance's connect details (on the cache miss only; the hit makes none)
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'google-iam-credentials', outcome: 'ok' })).toBe(2);
    // and a span per issuance, with the kind only
    const issueSpans = spans.getFinishedSpans().filter((s) => s.name === 'broker.issue');
    expect(issueSpans.length).toBe(2);
    expect(issueSpans[0]!.attributes).toEqual({ kind: 'cloudsql' });
  });

  test('a denial and an upstream failure are recorded with their codes', async () => {
    const denied = await exchange(await f.caller({ roles: ['Nothing'] }));
    expect(denied.status).toBe(403);
    expect(await valueOf(METRIC.issuanceDuration, { kind: 'cloudsql', outcome: 'not_granted' })).toBe(1);

    testApp.renew();
    f.sandbox.google.iamcredentials.inject({ fault: { kind: 'status', status: 503 }, times: 1 });
    const failed = await exchange(await f.caller());
    f.sandbox.google.iamcredentials.clearFaults();
    expect(failed.status).toBe(503);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'google-iam-credentials', outcome: 'upstream_unavailable' })).toBe(1);
    expect(await valueOf(METRIC.issuanceDuration, { kind: 'cloudsql', outcome: 'upstream_unavailable' })).toBe(1);
  });

  test('a CosmosDB exchange records kind cosmos, a miss then a hit, and one Cosmos call', async () => {
    const cosmos = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;
    const call = async () =>
      invoke(tokenHandler, {
        headers: { authorization: `Bearer ${await f.gateway()}` },
        form: {
          grant_type: TOKEN_EXCHANGE,
          subject_token: await f.caller(),
          subject_token_type: ACCESS_TOKEN_TYPE,
          resource: cosmos,
        },
      });
    expect([(await call()).status, (await call()).status]).toEqual([200, 200]);
    expect(await valueOf(METRIC.issuanceDuration, { kind: 'cosmos', outcome: 'issued' })).toBe(2);
    expect(await valueOf(METRIC.cache, { kind: 'cosmos', result: 'miss' })).toBe(1);
    expect(await valueOf(METRIC.cache, { kind: 'cosmos', result: 'hit' })).toBe(1);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'cosmos', outcome: 'ok' })).toBe(1);
  });

  test('a rotation dry run records its planned actions, the run and its Key Vault and Google IAM calls', async () => {
    const r = await invoke(adminHandler, {
      url: 'http://127.0.0.1:7071/api/admin/rotate?dryRun=true',
      headers: { authorization: `Bearer ${await f.gateway()}` },
      form: { subject_token: await f.caller({ roles: [SANDBOX.adminRole], aud: SANDBOX.clientAudience }) }, // an admin token: the broker's audience
    });
    expect(r.status).toBe(200);
    expect(await valueOf(METRIC.rotation, { action: 'run', outcome: 'dry-run' })).toBe(1);
    expect(await valueOf(METRIC.rotation, { action: 'rotate', outcome: 'planned' })).toBe(1);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'key-vault', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(await valueOf(METRIC.upstreamCalls, { upstream: 'google-iam', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
  });

  test('no attribute value carries a token or an identifier', async () => {
    const values = (await collect()).flatMap((m) => m.dataPoints.flatMap((p) => Object.values(p.attributes).map(String)));
    values.push(...spans.getFinishedSpans().flatMap((s) => Object.values(s.attributes).map(String)));
    expect(values.length).toBeGreaterThan(10);
    const secrets = [...issuedTokens()];
    const ids = [
      SANDBOX.tenantId,
      SANDBOX.readerObjectId,
      SANDBOX.gatewayObjectId,
      SANDBOX.gatewayAppId,
      SANDBOX.google.readerServiceAccount,
    ];
    for (const v of values) {
      expect(v).toMatch(/^[a-z0-9_.-]{1,40}$/); // closed vocabularies only
      for (const s of [...secrets, ...ids]) expect(s.includes(v) && v.length >= 16).toBe(false);
    }
  });
});

describe('Azure Monitor is loaded only when the connection string is set', () => {
  const CONN = 'InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://127.0.0.1:1/';
  // A telemetry facade of its own per test, in the state a new process starts in.
  let tel = new Telemetry({ settingsRecheckMs: 0 });
  afterEach(() => {
    delete process.env.APPLICATIONINSIGHTS_CONNECTION_STRING;
    tel = new Telemetry({ settingsRecheckMs: 0 });
  });

  test('unset: instruments are no-ops and @azure/monitor-opentelemetry is never imported', async () => {
    tel = new Telemetry({ settingsRecheckMs: 0 });
    tel.recordIssuance('cloudsql', 'issued', 1);
    await tel.init();
    expect(tel.current).toBe('off');
    expect(monitorLoaded).toBe(0);
  });

  test('set: imported once, useAzureMonitor called once with the connection string, instruments then record', async () => {
    process.env.APPLICATIONINSIGHTS_CONNECTION_STRING = CONN;
    tel = new Telemetry({ settingsRecheckMs: 0 });
    tel.recordIssuance('query', 'issued', 1); // starts loading; dropped
    expect(tel.current).toBe('loading');
    await tel.init();
    await tel.init();
    const before = await valueOf(METRIC.issuanceDuration, { kind: 'query', outcome: 'issued' });
    tel.recordIssuance('query', 'issued', 1);
    expect(tel.current).toBe('on');
    expect(monitorLoaded).toBe(1);
    // ingestion authenticates with the Function's managed identity (Application Insights local auth can be off)
    expect(monitorCalls).toEqual([
      { azureMonitorExporterOptions: { connectionString: CONN, credential: expect.any(ManagedIdentityCredential) } },
    ]);
    expect(await valueOf(METRIC.issuanceDuration, { kind: 'query', outcome: 'issued' })).toBe(before + 1);
  });
});

// In a fresh process, as a cold Functions host would load the app: the TypeScript sources (transpiled on
// require) and, when built (`npm test` builds first), the compiled dist/.
const TS_HOOK = `
  const ts = require('typescript'); const fs = require('fs');
  require.extensions['.ts'] = (m, f) => m._compile(ts.transpileModule(fs.readFileSync(f, 'utf8'), { fileName: f, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, f);`;
const variants: { name: string; hook: string; token: string; telemetry: string }[] = [
  { name: 'TypeScript sources', hook: TS_HOOK, token: './functions/token.ts', telemetry: './shared/observability/telemetry.ts' },
  ...(existsSync(resolve(ROOT, 'dist', 'shared', 'observability', 'telemetry.js'))
    ? [
        {
          name: 'compiled dist/',
          hook: '',
          token: './dist/functions/token.js',
          telemetry: './dist/shared/observability/telemetry.js',
        },
      ]
    : []),
];

describe.each(variants)('in a fresh process ($name)', ({ hook, token, telemetry }) => {
  test('without the connection string, neither @azure/monitor-opentelemetry nor @opentelemetry/api is ever loaded', () => {
    const script = `${hook}
      const otel = () => Object.keys(require.cache).filter((k) => /[\\/]@opentelemetry[\\/]|monitor-opentelemetry/.test(k)).length;
      require('${token}');
      const t = require('${telemetry}');
      const atImport = otel();
      t.recordIssuance('cloudsql', 'issued', 1); t.recordCache('cloudsql', true); t.recordUpstream('google-sts', 'ok'); t.recordRotation('run', 'completed');
      t.initTelemetry().then(() => process.stdout.write(JSON.stringify({ atImport, after: otel(), state: t.telemetryState() })));`;
    const env = { ...process.env };
    delete env.APPLICATIONINSIGHTS_CONNECTION_STRING;
    const run = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 30_000 });
    expect(run.stderr).not.toMatch(/Error/);
    expect(JSON.parse(run.stdout)).toEqual({ atImport: 0, after: 0, state: 'off' });
  });

  test('with the connection string, @azure/monitor-opentelemetry is loaded (once) on the first instrument call', () => {
    const script = `${hook}
      const monitor = () => Object.keys(require.cache).filter((k) => /monitor-opentelemetry[\\/]/.test(k)).length;
      require('${token}');
      const t = require('${telemetry}');
      const atImport = monitor();
      t.recordIssuance('cloudsql', 'issued', 1);
      t.initTelemetry().then(() => { process.stdout.write(JSON.stringify({ atImport, loaded: monitor() > 0, state: t.telemetryState() })); process.exit(0); });`;
    const env = {
      ...process.env,
      APPLICATIONINSIGHTS_CONNECTION_STRING:
        'InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://127.0.0.1:9/',
    };
    const run = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
    expect(JSON.parse(run.stdout)).toEqual({ atImport: 0, loaded: true, state: 'on' });
  });
});
