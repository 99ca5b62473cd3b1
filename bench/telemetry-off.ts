import { metrics, trace } from '@opentelemetry/api';
import {
  MeterProvider,
  PeriodicExportingMetricReader,
  AggregationTemporality,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { enableOpenTelemetry } from '../shared/observability/telemetry';

/** Telemetry on, without an exporter: the SDK aggregates and batches as in production, the export is a no-op. */
export function telemetryWithoutExporter(): () => Promise<void> {
  const metricExporter: PushMetricExporter = {
    export: (_m, done) => done({ code: 0 }),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
    selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE,
  };
  const spanExporter: SpanExporter = { export: (_s, done) => done({ code: 0 }), shutdown: () => Promise.resolve() };
  const meterProvider = new MeterProvider({
    readers: [new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 60_000 })],
  });
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(spanExporter)] });
  metrics.setGlobalMeterProvider(meterProvider);
  trace.setGlobalTracerProvider(tracerProvider);
  enableOpenTelemetry();
  return async () => {
    await meterProvider.shutdown();
    await tracerProvider.shutdown();
  };
}

/** A full collection before a memory reading (the process runs with --expose-gc). */
export function gcNow(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}
