import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential, type StoragePipelineOptions } from '@azure/storage-blob';
import { reapWithThisProcess, removeWithThisProcess } from '../../orphan-reaper';
import type { SandboxCa } from '../../pki';

/**
 * Azure Blob Storage for the sandbox and the tests: Microsoft's own emulator, Azurite (the npm package), run as a
 * child process on loopback. Not a re-implementation: the broker's `@azure/storage-blob` client talks to it
 * unmodified. HTTPS with a certificate of the sandbox CA and `--oauth basic`, so the broker authenticates with its
 * managed identity (a bearer token from the managed-identity emulator, audience https://storage.azure.com) exactly
 * as in Azure; the sandbox itself seeds containers with the well-known emulator account key.
 *
 * Flags: `--inMemoryPersistence` (nothing written to disk; it cannot be combined with `-l`), `--skipApiVersionCheck`
 * (the SDK's x-ms-version is newer than Azurite 3.35 knows, refused on Node 20 otherwise), `--disableTelemetry`.
 */

export const AZURITE_ACCOUNT = 'devstoreaccount1';
/** Azurite's documented well-known development key (not a secret): https://learn.microsoft.com/en-us/azure/storage/common/storage-use-azurite#well-known-storage-account-and-key */
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteEmulator {
  readonly name: 'azurite';
  /** https://127.0.0.1:PORT/devstoreaccount1 (path-style account, as Azurite serves it). */
  readonly accountUrl: string;
  readonly port: number;
  /** The Azurite process (gone after close()). */
  readonly pid: number | undefined;
  /** PEM of the CA its certificate is signed with. */
  readonly caPem: string;
  /** A client with the account key (sandbox seeding and test assertions; the broker never uses it). */
  admin(): BlobServiceClient;
  /** Stop the process (the store becomes unreachable); `restart()` brings it back on the same port, empty. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

function azuriteMain(): string {
  // The package's blob-only entry point (bin azurite-blob).
  return join(dirname(require.resolve('azurite/package.json')), 'dist', 'src', 'blob', 'main.js');
}

async function spawnAzurite(args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [azuriteMain(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  reapWithThisProcess(child);
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`Azurite did not start within 20 s: ${out.slice(-500)}`)), 20_000);
    const fail = (e: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(e);
    };
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /successfully listens on https?:\/\/[^:\s]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        child.stderr?.resume();
        resolve({ child, port: Number(m[1]) });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', (code) => fail(new Error(`Azurite exited (${code}) while starting: ${out.slice(-500)}`)));
  });
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
    }, 3000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export async function startAzurite(opts: { ca: SandboxCa; port?: number; host?: string }): Promise<AzuriteEmulator> {
  const host = opts.host ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'broker-azurite-'));
  const forgetDir = removeWithThisProcess(dir); // its TLS key
  const server = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: [host] });
  writeFileSync(join(dir, 'cert.pem'), server.certPem);
  writeFileSync(join(dir, 'key.pem'), server.keyPem, { mode: 0o600 });
  const args = (port: number) => [
    '--blobHost',
    host,
    '--blobPort',
    String(port),
    '--inMemoryPersistence',
    '--skipApiVersionCheck',
    '--disableTelemetry',
    '--silent',
    '--cert',
    join(dir, 'cert.pem'),
    '--key',
    join(dir, 'key.pem'),
    '--oauth',
    'basic',
  ];
  const started = await spawnAzurite(args(opts.port ?? 0));
  const port = started.port;
  let child = started.child;
  // Sandbox children die with the process that started them (npm start, a jest worker).
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  const accountUrl = `https://${host}:${port}/${AZURITE_ACCOUNT}`;
  const pipeline = { tlsOptions: { ca: opts.ca.certPem }, retryOptions: { maxTries: 1 } } as StoragePipelineOptions;
  let stopped = false;
  return {
    name: 'azurite',
    accountUrl,
    port,
    get pid() {
      return child.pid;
    },
    caPem: opts.ca.certPem,
    admin: () => new BlobServiceClient(accountUrl, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY), pipeline),
    async stop() {
      stopped = true;
      await kill(child);
    },
    async restart() {
      if (!stopped) return;
      ({ child } = await spawnAzurite(args(port)));
      stopped = false;
    },
    async close() {
      process.off('exit', onExit);
      await kill(child);
      rmSync(dir, { recursive: true, force: true });
      forgetDir();
    },
  };
}
