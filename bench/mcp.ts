import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { benchTokens } from './sandbox-tokens';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalHost } from '../local/host';
import { startSandbox } from '../local/sandbox';
import { childrenCpuMicros, cpuMicros } from './load';

export interface McpServerInfo {
  brokerUrl: string;
  queryHeaders: Record<string, string>;
  mcpHeaders: Record<string, string>;
  /** Catalogued queries the bench caller is granted (what tools/list shows, explain_access aside). */
  granted: number;
}

/**
 * (10) The MCP bench's server process: the broker on the local host (production defaults: LOG_LEVEL=info, log lines
 * to a file) with the sandbox, its PostgreSQL and emulated TLS instance, and a catalog of 100 queries the bench caller
 * is granted (the sample catalog's two orders queries and 98 generated ones, alternately shaped like them: a
 * caller-bound parameter and an enum, or an optional date). bench/run.ts drives POST /api/mcp (tools/call, tools/list)
 * and POST /api/query from its own process over HTTP, interleaved, and asks this process for its CPU over IPC.
 */
const GRANTED = 100;

interface CatalogDoc {
  queries: { name: string; [k: string]: unknown }[];
  [k: string]: unknown;
}
interface PolicyDoc {
  rules: { id: string; grants: { queries: string[] } }[];
  [k: string]: unknown;
}

/** The sample catalog plus generated queries, and the sample policy granting the Orders.Read callers exactly 100 of them. */
export function writeCatalogAndPolicy(dir: string): { catalogPath: string; policyPath: string } {
  const root = join(__dirname, '..', '..');
  const catalog = JSON.parse(readFileSync(join(root, 'local', 'queries.json'), 'utf8')) as CatalogDoc;
  const policy = JSON.parse(readFileSync(join(root, 'local', 'sample-policy.json'), 'utf8')) as PolicyDoc;
  const byCustomer = catalog.queries.find((q) => q.name === 'orders-by-customer')!;
  const count = catalog.queries.find((q) => q.name === 'order-count')!;
  const names = [byCustomer.name, count.name];
  for (let i = 1; names.length < GRANTED; i++) {
    const like = i % 2 ? byCustomer : count;
    const name = `bench-${like.name}-${String(i).padStart(3, '0')}`;
    catalog.queries.push({ ...like, name, description: `${String(like.description)} (bench copy ${i})` });
    names.push(name);
  }
  const readers = policy.rules.find((r) => r.id === 'orders-readers')!;
  readers.grants.queries = names;
  const catalogPath = join(dir, 'queries.json');
  const policyPath = join(dir, 'policy.json');
  writeFileSync(catalogPath, JSON.stringify(catalog));
  writeFileSync(policyPath, JSON.stringify(policy));
  return { catalogPath, policyPath };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'broker-bench-mcp-'));
  const { catalogPath, policyPath } = writeCatalogAndPolicy(dir);
  const loopback = `127.0.${process.env.TEST_LOOPBACK_NET ?? '0'}.251`;
  const sb = await startSandbox({
    cloudSql: { host: process.env.BENCH_MCP_HOST ?? loopback },
    policyPath,
    env: { LOG_LEVEL: 'info', QUERY_CATALOG_PATH: catalogPath },
  });
  sb.applyEnv();
  const host = await startLocalHost({ port: 0 });
  try {
    const { gateway, caller, agent } = await benchTokens(sb);
    const info: McpServerInfo = {
      brokerUrl: host.url,
      queryHeaders: { authorization: `Bearer ${gateway}`, 'x-subject-token': caller, 'content-type': 'application/json' },
      mcpHeaders: {
        authorization: `Bearer ${agent}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-11-25',
      },
      granted: GRANTED,
    };
    await new Promise<void>((resolve) => {
      process.on('message', (msg: { cmd: string }) => {
        if (msg.cmd === 'cpu') process.send?.({ cpu: cpuMicros(), pg: childrenCpuMicros(sb.postgres?.pid) });
        if (msg.cmd === 'stop') resolve();
      });
      process.send!({ ready: info });
    });
  } finally {
    await host.close();
    await sb.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0); // the connector's refresh timers must not keep the process (and the bench) waiting
}

if (require.main === module)
  main().catch((e: unknown) => {
    process.stderr.write(`mcp bench failed: ${(e as Error).stack}\n`);
    process.send?.({ skipped: `failed: ${(e as Error).message}` }, () => process.exit(0));
  });
