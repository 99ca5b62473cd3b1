import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { benchTokens } from './sandbox-tokens';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpRequest, InvocationContext, type HttpResponseInit } from '@azure/functions';
import { startSandbox } from '../local/sandbox';
import { writeCatalogAndPolicy } from './mcp';
import { telemetryWithoutExporter } from './telemetry-off';

/**
 * In-process profile of the MCP endpoint (no HTTP), with the MCP bench's catalog of 100 granted queries and production
 * defaults (LOG_LEVEL=info, log lines on stdout; redirect it to a file; telemetry on without an exporter):
 * `node --cpu-prof dist/bench/profile-mcp.js > /tmp/log`. Alternates, per round, POST /api/query/order-count,
 * MCP tools/call order-count and MCP tools/list, and prints for each the median wall time and the CPU per call on
 * stderr: robust against a loaded machine where the HTTP bench (10) is not. N calls of each (default 3000);
 * PROFILE_ONLY=call (or list, query, a comma-separated list) times only those. PROFILE_DIR=<dir> writes a CPU profile of
 * each kind's timed calls only (`<kind>-<round>.cpuprofile`, through the inspector, no sandbox start-up or warm-up in
 * it), for a per-call comparison of the kinds.
 */
async function main(): Promise<void> {
  telemetryWithoutExporter();
  const dir = mkdtempSync(join(tmpdir(), 'broker-profile-mcp-'));
  const { catalogPath, policyPath } = writeCatalogAndPolicy(dir);
  const sb = await startSandbox({
    cloudSql: { host: `127.0.${process.env.TEST_LOOPBACK_NET ?? '0'}.252` },
    policyPath,
    env: { LOG_LEVEL: 'info', QUERY_CATALOG_PATH: catalogPath },
  });
  sb.applyEnv();
  const { handler: mcp } = await import('../functions/mcp');
  const { handler: query } = await import('../functions/query');
  const { gateway, caller, agent } = await benchTokens(sb);
  const mcpHeaders = {
    authorization: `Bearer ${agent}`,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': '2025-11-25',
  };
  const rpc = (method: string, params?: Record<string, unknown>) =>
    JSON.stringify({ jsonrpc: '2.0', id: 1, method, ...(params ? { params } : {}) });
  const ctx = () => new InvocationContext({ invocationId: 'x', functionName: 'f' });
  const ok = (res: HttpResponseInit, what: string): HttpResponseInit => {
    if (res.status !== 200) throw new Error(`${what}: status ${res.status} ${(res.body as string).slice(0, 200)}`);
    return res;
  };
  /** One MCP message through the endpoint, as the local host hands it over. */
  const mcpCall = (method: string, params?: Record<string, unknown>) => async () =>
    ok(
      await mcp(
        new HttpRequest({
          method: 'POST',
          url: 'http://127.0.0.1/api/mcp',
          headers: mcpHeaders,
          body: { string: rpc(method, params) },
        }),
        ctx(),
      ),
      method,
    );
  const calls = {
    query: async () =>
      ok(
        await query(
          new HttpRequest({
            method: 'POST',
            url: 'http://127.0.0.1/api/query/order-count',
            headers: { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' },
            params: { name: 'order-count' },
            body: { string: '{}' },
          }),
          ctx(),
        ),
        'query',
      ),
    call: mcpCall('tools/call', { name: 'order-count', arguments: {} }),
    list: mcpCall('tools/list'),
  };
  const listed = JSON.parse((await calls.list()).body as string) as { result: { tools: unknown[] } };
  if (listed.result.tools.length < 101)
    throw new Error(`tools/list listed ${listed.result.tools.length} tools, not 100 and more`);
  const called = JSON.parse((await calls.call()).body as string) as { result: { isError?: boolean } };
  if (called.result.isError) throw new Error('tools/call answered a tool error');
  const n = Number(process.env.N ?? 3000);
  const kinds = (['query', 'call', 'list'] as const).filter((k) => (process.env.PROFILE_ONLY ?? k).split(',').includes(k));
  const rounds = 5;
  const lat = { query: [] as number[], call: [] as number[], list: [] as number[] };
  const cpu = { query: 0, call: 0, list: 0 };
  const profileDir = process.env.PROFILE_DIR;
  const inspector = profileDir ? new Session() : undefined;
  if (inspector) {
    inspector.connect();
    await inspector.post('Profiler.enable');
    await inspector.post('Profiler.setSamplingInterval', { interval: 100 });
  }
  for (let r = 0; r < rounds; r++)
    for (const k of kinds) {
      for (let i = 0; i < 50; i++) await calls[k]();
      if (inspector) await inspector.post('Profiler.start');
      const c0 = process.cpuUsage();
      for (let i = 0; i < n / rounds; i++) {
        const t0 = process.hrtime.bigint();
        await calls[k]();
        lat[k].push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      const c = process.cpuUsage(c0);
      cpu[k] += (c.user + c.system) / n;
      if (inspector) {
        const { profile } = await inspector.post('Profiler.stop');
        writeFileSync(join(profileDir!, `${k}-${r}.cpuprofile`), JSON.stringify(profile));
      }
    }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  for (const k of kinds)
    process.stderr.write(`${k}: median ${median(lat[k]).toFixed(0)} µs, CPU ${cpu[k].toFixed(0)} µs per call\n`);
  if (kinds.length === 3)
    process.stderr.write(`tools/call / query median ${(median(lat.call) / median(lat.query)).toFixed(2)}\n`);
  await sb.stop();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`mcp profile failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
