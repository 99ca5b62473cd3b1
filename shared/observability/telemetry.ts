import type { Attributes, Counter, Histogram, Tracer } from '@opentelemetry/api';
import { telemetryConfig } from '../config/telemetry';

/**
 * A small typed facade over OpenTelemetry metrics and traces.
 *
 * - `APPLICATIONINSIGHTS_CONNECTION_STRING` set: on the first instrument call, `@azure/monitor-opentelemetry`
 *   is imported (once, asynchronously) and `useAzureMonitor()` registers the global providers; from then on
 *   the instruments record through `@opentelemetry/api` (calls made while it loads are dropped).
 * - Unset: nothing is loaded (not even `@opentelemetry/api`) and every call returns at once.
 * - `enableOpenTelemetry()` binds the instruments to whatever global providers are registered (tests
 *   register an in-memory MeterProvider).
 *
 * Attribute values are closed vocabularies (kinds, reason codes, upstream names, actions): never token
 * material, never a subject or client identifier. Imports of this module cost nothing: the OTel API is
 * loaded with `require` only when telemetry is on.
 */

export type IssuanceKind = 'cloudsql' | 'cosmos' | 'query';
/** `issued`, or the BrokerError code the request failed with. */
export type TelemetryOutcome = string;
/** Upstream names: slugs of the services' display names (`google-sts`, `google-iam-credentials`, `key-vault`, …). */
export type UpstreamName = string;

export const METRIC = {
  issuanceDuration: 'broker.issuance.duration',
  cache: 'broker.cache.requests',
  upstreamCalls: 'broker.upstream.calls',
  rotation: 'broker.rotation.outcomes',
} as const;

const METER_NAME = 'token-broker';

interface Instruments {
  readonly issuance: Histogram;
  readonly cache: Counter;
  readonly upstream: Counter;
  readonly rotation: Counter;
  readonly tracer: Tracer;
}

export type TelemetryState = 'unresolved' | 'off' | 'loading' | 'on';

type OtelApi = typeof import('@opentelemetry/api');

function loadApi(): OtelApi {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('@opentelemetry/api') as OtelApi;
}

/**
 * The facade's state: off, loading Azure Monitor, or bound to the OTel API's global providers (which are global
 * by OpenTelemetry's own design). The process has one (`processTelemetry`, behind the functions below).
 */
export class Telemetry {
  private state: TelemetryState = 'unresolved';
  private inst: Instruments | undefined;
  private loading: Promise<void> | undefined;

  /** `settingsRecheckMs`: how often the connection string is re-read (default: as the other settings). */
  constructor(private readonly opts: { settingsRecheckMs?: number } = {}) {}

  /** Bind the instruments to the OTel API's global providers (Azure Monitor's, or a test's). */
  enableOpenTelemetry(): void {
    const api = loadApi();
    const meter = api.metrics.getMeter(METER_NAME);
    this.inst = {
      issuance: meter.createHistogram(METRIC.issuanceDuration, {
        unit: 'ms',
        description: 'Time from a parsed target to the answer (subject validation, policy, provider), by kind and outcome',
      }),
      cache: meter.createCounter(METRIC.cache, {
        description: 'Credentials served from the broker cache (result=hit) or fetched (result=miss), by kind',
      }),
      upstream: meter.createCounter(METRIC.upstreamCalls, {
        description: 'Calls to upstream services, by upstream and outcome (ok or the broker code)',
      }),
      rotation: meter.createCounter(METRIC.rotation, { description: 'Key rotation outcomes, by action and outcome' }),
      tracer: api.trace.getTracer(METER_NAME),
    };
    this.state = 'on';
  }

  /** Start Azure Monitor if configured. Resolves when telemetry is on (or off). Safe to call repeatedly. */
  init(): Promise<void> {
    if (this.state !== 'unresolved') return this.loading ?? Promise.resolve();
    let connectionString: string | undefined;
    let clientId: string | undefined;
    try {
      ({ connectionString, clientId } = telemetryConfig.get(this.opts.settingsRecheckMs));
    } catch {
      connectionString = undefined;
    }
    if (!connectionString) {
      this.state = 'off';
      return Promise.resolve();
    }
    this.state = 'loading';
    this.loading = Promise.all([import('@azure/monitor-opentelemetry'), import('@azure/identity')])
      .then(([m, identity]) => {
        // Ingestion authenticated with the Function's managed identity (Entra ID), so Application Insights can refuse
        // key-based ingestion (local auth off); the identity holds Monitoring Metrics Publisher on the component.
        const credential = new identity.ManagedIdentityCredential({
          ...(clientId ? { clientId } : {}),
          retryOptions: { maxRetries: 0 },
        });
        m.useAzureMonitor({ azureMonitorExporterOptions: { connectionString, credential } });
        this.enableOpenTelemetry();
      })
      .catch((e: unknown) => {
        this.state = 'off';
        process.stderr.write(
          `telemetry disabled: @azure/monitor-opentelemetry failed to start (${(e as Error)?.name ?? 'error'})\n`,
        );
      });
    return this.loading;
  }

  /** The bound instruments, or undefined when telemetry is off or still loading. */
  on(): Instruments | undefined {
    if (this.state === 'on') return this.inst;
    if (this.state === 'unresolved') void this.init();
    return undefined;
  }

  get current(): TelemetryState {
    return this.state;
  }

  recordIssuance(kind: IssuanceKind, outcome: TelemetryOutcome, durationMs: number): void {
    this.on()?.issuance.record(durationMs, { kind, outcome });
  }

  recordCache(kind: IssuanceKind, hit: boolean): void {
    this.on()?.cache.add(1, { kind, result: hit ? 'hit' : 'miss' });
  }

  recordUpstream(upstream: UpstreamName, outcome: TelemetryOutcome): void {
    this.on()?.upstream.add(1, { upstream, outcome });
  }

  recordRotation(action: string, outcome: string): void {
    this.on()?.rotation.add(1, { action, outcome });
  }
}

/** The process's telemetry (what the functions below record through). */
const processTelemetry = new Telemetry();

/** Bind the process's instruments to the OTel API's global providers (Azure Monitor's, or a test's). */
export function enableOpenTelemetry(): void {
  processTelemetry.enableOpenTelemetry();
}

function on(): Instruments | undefined {
  return processTelemetry.on();
}

// ---------- instruments ----------

export function recordIssuance(kind: IssuanceKind, outcome: TelemetryOutcome, durationMs: number): void {
  processTelemetry.recordIssuance(kind, outcome, durationMs);
}

export function recordCache(kind: IssuanceKind, hit: boolean): void {
  processTelemetry.recordCache(kind, hit);
}

export function recordUpstream(upstream: UpstreamName, outcome: TelemetryOutcome): void {
  processTelemetry.recordUpstream(upstream, outcome);
}

export function recordRotation(action: string, outcome: string): void {
  processTelemetry.recordRotation(action, outcome);
}

/** `Google IAM Credentials` → `google-iam-credentials`. */
export function upstreamSlug(service: string): UpstreamName {
  return service
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

/** The outcome of an upstream HTTP answer: `ok`, or the code the broker maps the status to. */
export function httpOutcome(status: number): TelemetryOutcome {
  if (status < 400) return 'ok';
  if (status === 429) return 'upstream_throttled';
  if (status === 503) return 'upstream_unavailable';
  if (status === 504) return 'upstream_timeout';
  if (status >= 500) return 'upstream_error';
  return 'upstream_denied';
}

/**
 * Run `fn` in a span when telemetry is on (attributes as for metrics: no identifiers, no tokens); the span
 * records the error code on failure. Off: just `fn()`.
 */
export async function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  const i = on();
  if (!i) return fn();
  return i.tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn();
    } catch (e) {
      const code = (e as { code?: unknown })?.code;
      span.setAttribute('broker.outcome', typeof code === 'string' ? code : 'internal');
      span.setStatus({ code: 2 /* SpanStatusCode.ERROR */ });
      throw e;
    } finally {
      span.end();
    }
  });
}
