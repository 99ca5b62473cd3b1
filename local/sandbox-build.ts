import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * What every part of the sandbox (local/sandbox-azure.ts, -google.ts, -cloudsql.ts) is started with: the port it
 * listens on, where it registers its stop, the app settings and the service list it adds to, and this run's
 * directory for CA bundles. local/sandbox.ts composes the parts.
 */
export interface SandboxBuild {
  readonly fixedPorts: boolean;
  /** The fixed port under `fixedPorts` (npm start), else 0 (an ephemeral port). */
  port(fixed: number): number;
  /** Run by stop() in reverse order of registration (and when a later part fails to start). */
  onStop(stop: () => Promise<void>): void;
  /** App settings for the broker, as local.settings.json `Values` would hold them. */
  readonly env: Record<string, string>;
  /** Everything started, for printing. */
  readonly services: Record<string, string>;
  /** Write a CA certificate (PEM) into this run's directory as `name`; returns the file's path. */
  writeCaFile(name: string, certPem: string): string;
}

/**
 * The build of one sandbox. Its directory is `stateDir` (npm start's per-run directory), else a fresh temporary
 * directory, created on the first CA file and removed by stop().
 */
export function createSandboxBuild(
  opts: { fixedPorts?: boolean; stateDir?: string },
  stops: (() => Promise<void>)[],
): SandboxBuild {
  let dir: string | undefined;
  const onStop = (stop: () => Promise<void>) => void stops.push(stop);
  return {
    fixedPorts: opts.fixedPorts ?? false,
    port: (fixed) => (opts.fixedPorts ? fixed : 0),
    onStop,
    env: {},
    services: {},
    writeCaFile(name, certPem) {
      if (dir === undefined) {
        const d = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'broker-kv-'));
        mkdirSync(d, { recursive: true });
        if (!opts.stateDir) onStop(() => Promise.resolve(rmSync(d, { recursive: true, force: true })));
        dir = d;
      }
      const file = join(dir, name);
      writeFileSync(file, certPem);
      return file;
    },
  };
}

const SAMPLE_POLICY = resolve(__dirname, '..', '..', 'local', 'sample-policy.json');
const SAMPLE_QUERIES = resolve(__dirname, '..', '..', 'local', 'queries.json');

/** A file of local/, from local/ (ts-jest) and from dist/local/ (compiled). */
function localFile(name: string, fromDist: string): string {
  const candidates = [resolve(__dirname, name), fromDist];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

export const samplePolicyPath = (): string => localFile('sample-policy.json', SAMPLE_POLICY);
export const sampleQueriesPath = (): string => localFile('queries.json', SAMPLE_QUERIES);
