import type { Attributes, Histogram, ObservableCounter, ObservableResult, Tracer } from '@opentelemetry/api';
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
  readonly tracer: Tracer;
}

/**
 * Counts by two closed-vocabulary attributes, aggregated in the process: a call adds to a number found by two map
 * look-ups (no attribute object, no hashing per call); the OTel SDK reads the totals through an observable counter
 * when its reader collects (the exporter's interval). Cumulative, as the SDK's own counters are.
 */
class Tally {
  private readonly byA = new Map<string, Map<string, { attributes: Attributes; n: number }>>();
  constructor(
    private readonly a: string,
    private readonly b: string,
  ) {}

  add(a: string, b: string): void {
    let inner = this.byA.get(a);
    if (!inner) this.byA.set(a, (inner = new Map<string, { attributes: Attributes; n: number }>()));
    const cell = inner.get(b);
    if (cell) cell.n++;
    else inner.set(b, { attributes: Object.freeze({ [this.a]: a, [this.b]: b }), n: 1 });
  }

  observe(result: ObservableResult): void {
    for (const inner of this.byA.values()) for (const c of inner.values()) result.observe(c.n, c.attributes);
  }
}

/** Attribute objects of the issuance histogram, one per (kind, outcome), made once. */
class AttributeCache {
  private readonly byA = new Map<string, Map<string, Attributes>>();
  constructor(
    private readonly a: string,
    private readonly b: string,
  ) {}

  of(a: string, b: string): Attributes {
    let inner = this.byA.get(a);
    if (!inner) this.byA.set(a, (inner = new Map<string, Attributes>()));
    let attrs = inner.get(b);
    if (!attrs) inner.set(b, (attrs = Object.freeze({ [this.a]: a, [this.b]: b })));
    return attrs;
  }
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
  private readonly cache = new Tally('kind', 'result');
  private readonly upstream = new Tally('upstream', 'outcome');
  private readonly rotation = new Tally('action', 'outcome');
  private readonly issuanceAttributes = new AttributeCache('kind', 'outcome');
  private observed: { instrument: ObservableCounter; callback: (r: ObservableResult) => void }[] = [];

  /** `settingsRecheckMs`: how often the connection string is re-read (default: as the other settings). */
  constructor(private readonly opts: { settingsRecheckMs?: number } = {}) {}

  /** Bind the instruments to the OTel API's global providers (Azure Monitor's, or a test's). */
  enableOpenTelemetry(): void {
    const api = loadApi();
    const meter = api.metrics.getMeter(METER_NAME);
    for (const o of this.observed) o.instrument.removeCallback(o.callback);
    const observe = (name: string, description: string, tally: Tally) => {
      const instrument = meter.createObservableCounter(name, { description });
      const callback = (r: ObservableResult) => tally.observe(r);
      instrument.addCallback(callback);
      return { instrument, callback };
    };
    this.observed = [
      observe(
        METRIC.cache,
        'Credentials served from the broker cache (result=hit) or fetched (result=miss), by kind',
        this.cache,
      ),
      observe(METRIC.upstreamCalls, 'Calls to upstream services, by upstream and outcome (ok or the broker code)', this.upstream),
      observe(METRIC.rotation, 'Key rotation outcomes, by action and outcome', this.rotation),
    ];
    this.inst = {
      issuance: meter.createHistogram(METRIC.issuanceDuration, {
        unit: 'ms',
        description: 'Time from a parsed target to the answer (subject validation, policy, provider), by kind and outcome',
      }),
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
    this.on()?.issuance.record(durationMs, this.issuanceAttributes.of(kind, outcome));
  }

  recordCache(kind: IssuanceKind, hit: boolean): void {
    if (this.on()) this.cache.add(kind, hit ? 'hit' : 'miss');
  }

  recordUpstream(upstream: UpstreamName, outcome: TelemetryOutcome): void {
    if (this.on()) this.upstream.add(upstream, outcome);
  }

  recordRotation(action: string, outcome: string): void {
    if (this.on()) this.rotation.add(action, outcome);
  }
}

/** The process's telemetry (what the functions below record through). */
const processTelemetry = new Telemetry();

/** Bind the process's instruments to the OTel API's global providers (Azure Monitor's, or a test's). */
export function enableOpenTelemetry(): void {
  processTelemetry.enableOpenTelemetry();
}

/**
 * Start Azure Monitor if configured. Resolves when telemetry is on (or off). Safe to call repeatedly.
 * @public (the fresh-process telemetry test calls it through the compiled module)
 */
export function initTelemetry(): Promise<void> {
  return processTelemetry.init();
}

/**
 * The process telemetry's state: `off`, `loading` or `on`.
 * @public (the fresh-process telemetry test reads it through the compiled module)
 */
export function telemetryState(): TelemetryState {
  return processTelemetry.current;
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
 * A span over work that has already run (from `startedAtMs`, a `performance.now()` reading, to now): for work whose
 * span is only worth its cost once it is known to have called an upstream (a cache miss, a failure), so a cache
 * hit makes none. It is not the active span while the work runs (the upstream calls' own HTTP spans are children of
 * the invocation's span). `outcome`: a broker error code on failure. Off: nothing.
 */
export function spanAfter(name: string, attributes: Attributes, startedAtMs: number, outcome?: string): void {
  const i = on();
  if (!i) return;
  const span = i.tracer.startSpan(name, { attributes, startTime: performance.timeOrigin + startedAtMs });
  if (outcome !== undefined) {
    span.setAttribute('broker.outcome', outcome);
    span.setStatus({ code: 2 /* SpanStatusCode.ERROR */ });
  }
  span.end();
}
