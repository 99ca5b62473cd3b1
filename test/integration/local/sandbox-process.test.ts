import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { workerHost } from '../../helpers/loopback';

/**
 * The built sandbox as `npm start` runs it (`node dist/local/start.js`), on ephemeral ports so it never meets
 * another checkout's fixed ones: Ctrl+C (SIGINT) stops it within a few seconds with PostgreSQL gone, even with
 * connections left open; a second Ctrl+C forces it; two runs from one directory keep their files apart.
 */

const root = resolve(__dirname, '..', '..', '..');
const startJs = join(root, 'dist', 'local', 'start.js');
const STOP_WITHIN_MS = 6000;

interface Run {
  proc: ChildProcess;
  state: {
    brokerUrl: string;
    entraUrl: string;
    runDir: string;
    postgresPid: number;
    postgresDataDir: string;
    pid: number;
    azuritePid: number;
  };
  output: () => string;
}

let cwd: string;
const runs: ChildProcess[] = [];
beforeAll(() => {
  if (!existsSync(startJs)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  cwd = mkdtempSync(join(tmpdir(), 'sandbox-run-'));
  chmodSync(cwd, 0o755); // PostgreSQL runs as its own user when the tests run as root
});
afterAll(() => {
  for (const p of runs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  rmSync(cwd, { recursive: true, force: true });
});

function spawnSandbox(cloudSqlHost: string, tmp = cwd): ChildProcess {
  return spawn(process.execPath, [startJs, '--ephemeral-ports'], {
    cwd,
    env: { ...process.env, PORT: '0', SANDBOX_CLOUDSQL_HOST: cloudSqlHost, NODE_OPTIONS: '', TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Command lines (argv) of the processes that name `dir` (PostgreSQL runs with -D under the run's TMPDIR). */
function processesUnder(dir: string): string[][] {
  const out: string[][] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(dir)) out.push(cmd.split('\0'));
    } catch {
      /* gone */
    }
  }
  return out;
}

async function start(cloudSqlHost: string): Promise<Run> {
  const proc = spawnSandbox(cloudSqlHost);
  runs.push(proc);
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`sandbox did not start in 60 s:\n${out}`)), 60_000);
    const check = () => {
      if (out.includes('Press Ctrl+C to stop.')) {
        clearTimeout(timer);
        ok();
      }
    };
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`sandbox exited (${code}) while starting:\n${out}`));
    });
  });
  const runDir = /This run's files\s+(\S+)/.exec(out)![1]!;
  const state = JSON.parse(readFileSync(join(runDir, 'sandbox.json'), 'utf8')) as Run['state'];
  return { proc, state, output: () => out };
}

function exited(proc: ChildProcess): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  if (proc.exitCode !== null) return Promise.resolve({ code: proc.exitCode, ms: 0 });
  return new Promise((ok) => proc.once('exit', (code) => ok({ code, ms: Date.now() - t0 })));
}

/** Running (a zombie, killed but not yet reaped by a container's init, counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function gone(pid: number, withinMs = 2000): Promise<boolean> {
  for (const t0 = Date.now(); Date.now() - t0 < withinMs; await new Promise((r) => setTimeout(r, 50)))
    if (!alive(pid)) return true;
  return !alive(pid);
}

/** Open connections that a naive server.close() would wait for: idle keep-alive and a half-sent request. */
async function holdConnections(run: Run): Promise<Socket[]> {
  const socks: Socket[] = [];
  for (const u of [run.state.brokerUrl, run.state.entraUrl]) {
    const { hostname, port } = new URL(u);
    for (const req of ['', `POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial`]) {
      const s = connect(Number(port), hostname);
      s.on('error', () => undefined);
      await new Promise((ok) => s.once('connect', ok));
      if (req) s.write(req);
      socks.push(s);
    }
  }
  return socks;
}

describe('npm start (dist/local/start.js --ephemeral-ports)', () => {
  test('two runs from one checkout at once: distinct run directories and CA files; SIGINT stops each within seconds, PostgreSQL gone', async () => {
    const [a, b] = await Promise.all([start(workerHost(180)), start(workerHost(190))]);
    expect(a.state.runDir).not.toBe(b.state.runDir);
    for (const r of [a, b]) {
      expect(readdirSync(r.state.runDir).sort()).toEqual([
        'client-ca.key', // npm run dev-cert issues client certificates with it
        'client-ca.pem',
        'cosmos-ca.pem',
        'keyvault-ca.pem',
        'sandbox.json',
        'storage-ca.pem',
      ]);
      expect(alive(r.state.postgresPid)).toBe(true);
      expect(alive(r.state.azuritePid)).toBe(true);
    }
    // each run's own CA (a shared path would hold only the last writer's)
    expect(readFileSync(join(a.state.runDir, 'keyvault-ca.pem'), 'utf8')).not.toBe(
      readFileSync(join(b.state.runDir, 'keyvault-ca.pem'), 'utf8'),
    );
    expect(a.state.brokerUrl).not.toBe(b.state.brokerUrl);
    const health = await fetch(`${a.state.brokerUrl}/health?probe=live`);
    expect(health.status).toBe(200);

    const held = await holdConnections(a);
    const stopped = exited(a.proc);
    a.proc.kill('SIGINT');
    const { code, ms } = await stopped;
    held.forEach((s) => s.destroy());
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_WITHIN_MS);
    expect(await gone(a.state.postgresPid, 0)).toBe(true);
    expect(await gone(a.state.azuritePid)).toBe(true);
    expect(existsSync(a.state.postgresDataDir)).toBe(false);
    expect(existsSync(a.state.runDir)).toBe(false);
    // the other run is untouched by the first one's stop
    expect(alive(b.state.postgresPid)).toBe(true);
    expect(readdirSync(b.state.runDir)).toContain('keyvault-ca.pem');
    expect((await fetch(`${b.state.brokerUrl}/health?probe=live`)).status).toBe(200);

    // a second SIGINT right after the first forces the exit
    const forced = exited(b.proc);
    b.proc.kill('SIGINT');
    b.proc.kill('SIGINT');
    const f = await forced;
    expect(f.ms).toBeLessThan(STOP_WITHIN_MS);
    expect([0, 130]).toContain(f.code);
    expect(await gone(b.state.postgresPid)).toBe(true); // SIGKILL delivery
    expect(await gone(b.state.azuritePid)).toBe(true); // killed by the exit handler

    expect(existsSync(b.state.postgresDataDir)).toBe(false);
    expect(existsSync(b.state.runDir)).toBe(false);
  }, 120_000);

  test('Ctrl+C while it is still starting: stops, and no PostgreSQL or data directory is left behind', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'sandbox-early-'));
    chmodSync(tmp, 0o755);
    try {
      const proc = spawnSandbox(workerHost(200), tmp);
      runs.push(proc);
      // wait until the PostgreSQL server runs (its -D names this run's TMPDIR), then interrupt
      const postgresUp = () => processesUnder(tmp).some((argv) => argv[0]!.endsWith('/postgres'));
      for (let i = 0; i < 1200 && !postgresUp(); i++) await new Promise((r) => setTimeout(r, 25));
      expect(postgresUp()).toBe(true);
      const stopped = exited(proc);
      proc.kill('SIGINT');
      const { ms } = await stopped;
      expect(ms).toBeLessThan(STOP_WITHIN_MS);
      await new Promise((r) => setTimeout(r, 300));
      expect(processesUnder(tmp)).toEqual([]);
      expect(readdirSync(tmp).filter((d) => d.startsWith('tb-pg-'))).toEqual([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 60_000);

  test('killed outright (SIGKILL: no exit handler runs): PostgreSQL, Azurite, the data directory and the CA keys go with it', async () => {
    const run = await start(workerHost(210));
    const { postgresPid, azuritePid, postgresDataDir, runDir } = run.state;
    expect(alive(postgresPid)).toBe(true);
    expect(alive(azuritePid)).toBe(true);
    expect(readdirSync(runDir)).toContain('client-ca.key');
    const stopped = exited(run.proc);
    run.proc.kill('SIGKILL');
    await stopped;
    expect(await gone(postgresPid, 5000)).toBe(true);
    expect(await gone(azuritePid, 5000)).toBe(true);
    for (let i = 0; i < 100 && (existsSync(postgresDataDir) || existsSync(runDir)); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(postgresDataDir)).toBe(false);
    expect(existsSync(runDir)).toBe(false);
  }, 90_000);

  test('bad start options are refused by name', () => {
    const r = (() => {
      try {
        execFileSync(process.execPath, [startJs, '--ephemeral-ports'], {
          cwd,
          env: { ...process.env, SANDBOX_CLOUDSQL_HOST: '10.0.0.1', NODE_OPTIONS: '' },
          stdio: 'pipe',
        });
        return '';
      } catch (e) {
        return String((e as { stderr?: Buffer }).stderr ?? '');
      }
    })();
    expect(r).toContain('SANDBOX_CLOUDSQL_HOST');
  });
});
