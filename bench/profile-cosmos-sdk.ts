import { fork, type ChildProcess } from 'node:child_process';
import { request, type Agent } from 'node:https';
import { join } from 'node:path';
import { CosmosClient, PermissionMode, type CosmosClientOptions } from '@azure/cosmos';
import { createHttpHeaders, type HttpClient, type PipelineRequest, type PipelineResponse } from '@azure/core-rest-pipeline';
import { SANDBOX } from '../local/ids';
import { createContext } from '../shared/app/context';
import { cosmosConfig, endpointOf } from '../shared/config/cosmos';
import { agentFor, secretNameOf } from '../shared/cosmos/client';
import { KeyVaultSecrets } from '../shared/keyvault/client';

/**
 * What `@azure/cosmos` itself costs in a Cosmos cache miss, and which of its options move it: the broker's CPU for
 * one user upsert + one permission upsert (what a first-seen caller's miss sends), for
 * - `broker`: a CosmosClient built as shared/cosmos/client.ts builds it;
 * - `noDiscovery`: the same with `connectionPolicy.enableEndpointDiscovery: false`;
 * - `thinTransport`: the same with a minimal `httpClient` (node:https on the same agent, no streams or decompression);
 * - `rawHttps`: two POSTs on the same keep-alive agent to the same emulator, no SDK (the floor: TLS, HTTP, sockets);
 * interleaved in one process, one of each per round, the emulators in bench/server.ts (another process).
 * `node dist/bench/profile-cosmos-sdk.js [rounds]`; PROFILE_LATENCY_MS (default 30) is the emulators' latency and
 * PROFILE_GAP_MS (default 30) an idle pause before each measured pair (as in (8), where the broker idles while an
 * upstream answers and its caches go cold); 0 and 0 measure the hot path. Prints the median CPU per pair.
 */

function ask<T>(child: ChildProcess, cmd: string, extra: Record<string, unknown> = {}): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as T));
    child.send({ cmd, ...extra });
  });
}

/** The minimal transport: what the SDK needs of a response (status, headers, body text). */
const thinTransport: HttpClient = {
  sendRequest: (req: PipelineRequest) =>
    new Promise<PipelineResponse>((resolve, reject) => {
      const r = request(
        req.url,
        { method: req.method, agent: req.agent as Agent | undefined, headers: req.headers.toJSON() },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const headers = createHttpHeaders();
            for (const [k, v] of Object.entries(res.headers))
              if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
            resolve({ request: req, status: res.statusCode ?? 0, headers, bodyAsText: Buffer.concat(chunks).toString('utf8') });
          });
        },
      );
      r.on('error', reject);
      r.end(typeof req.body === 'string' ? req.body : undefined);
    }),
};

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 40);
  const gapMs = Number(process.env.PROFILE_GAP_MS ?? 30);
  const server = fork(join(__dirname, 'server.js'), [], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_PREWARM: 'false' },
    execArgv: ['--experimental-vm-modules'],
  });
  await new Promise((r) => server.once('message', r));
  const { env } = await ask<{ env: Record<string, string> }>(server, 'env');
  Object.assign(process.env, env, { LOG_LEVEL: 'info' });
  await ask(server, 'latency', { latencyMs: Number(process.env.PROFILE_LATENCY_MS ?? 30) });
  const app = createContext();
  const cfg = cosmosConfig.get();
  const { account, database, container } = SANDBOX.cosmos;
  const endpoint = endpointOf(cfg, account)!;
  const agent = agentFor(cfg, endpoint);
  const key = (await KeyVaultSecrets.fromSettings({ identities: app.identities }).get(secretNameOf(cfg, account)))!.value;
  const make = (extra: Partial<CosmosClientOptions> = {}, discovery = true) =>
    new CosmosClient({
      endpoint,
      key,
      ...(agent ? { agent } : {}),
      userAgentSuffix: 'token-broker',
      connectionPolicy: {
        requestTimeout: 10_000,
        enableEndpointDiscovery: discovery,
        retryOptions: { maxRetryAttemptCount: 9, fixedRetryIntervalInMilliseconds: 0, maxWaitTimeInSeconds: 1 },
      },
      ...extra,
    });
  const clients = { broker: make(), noDiscovery: make({}, false), thinTransport: make({ httpClient: thinTransport }) };
  let seq = 0;
  const upserts = async (c: CosmosClient) => {
    const db = c.database(database);
    const id = `profile-sdk-${process.pid}-${seq++}`;
    await db.users.upsert({ id });
    const { resource } = await db
      .user(id)
      .permissions.upsert(
        { id: 'read', permissionMode: PermissionMode.Read, resource: `dbs/${database}/colls/${container}` },
        { resourceTokenExpirySeconds: 600 },
      );
    if (!resource?._token) throw new Error('no token');
  };
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const r = request(
        `${endpoint}/dbs/${database}/users`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
        (m) => {
          m.resume();
          m.on('end', resolve);
        },
      );
      r.on('error', reject);
      r.end('{"id":"x"}');
    });
  const variants: Record<string, () => Promise<void>> = {
    ...Object.fromEntries(Object.entries(clients).map(([k, c]) => [k, () => upserts(c)])),
    rawHttps: async () => {
      await post();
      await post();
    },
  };
  const cpu: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const run of Object.values(variants)) for (let i = 0; i < 5; i++) await run();
  for (let i = 0; i < rounds; i++)
    for (const [k, run] of Object.entries(variants)) {
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      const c0 = process.cpuUsage();
      await run();
      const c = process.cpuUsage(c0);
      cpu[k]!.push((c.user + c.system) / 1000);
    }
  for (const [k, xs] of Object.entries(cpu)) {
    const sorted = [...xs].sort((a, b) => a - b);
    process.stdout.write(
      `${k.padEnd(14)} ${sorted[sorted.length >> 1]!.toFixed(2)} ms CPU per user + permission upsert (median of ${xs.length})\n`,
    );
  }
  for (const c of Object.values(clients)) c.dispose();
  await app.close();
  server.send({ cmd: 'stop' });
  await new Promise((r) => server.once('exit', r));
}

void main();
