import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';

/**
 * What the sandbox starts (PostgreSQL, Azurite) and the directories it writes (PostgreSQL's data directory, the
 * run's CA keys) must not outlive the process that started them, even when that process cannot clean up: a
 * SIGKILL, an out-of-memory kill, a jest worker killed mid-test. Exit handlers cover every other ending; this covers
 * those. One small watchdog process per starting process (spawned on first use, in its own session so a terminal's
 * Ctrl+C does not reach it) holds the read end of a pipe; when the starter dies, the kernel closes the write end,
 * the watchdog reads end-of-file, kills what is still registered and removes the registered directories, then exits.
 *
 * A registered pid is killed only if it is still the process registered: the watchdog records its start time
 * (`/proc/PID/stat`, field 22) when told of it and compares before killing, so a pid the system has since given to
 * another process is left alone. Where `/proc` cannot be read the pid is not killed (directories are still removed).
 */

const WATCHDOG = String.raw`
const fs = require('fs');
const pids = new Map(), dirs = new Set();
const started = (pid) => { try { const s = fs.readFileSync('/proc/' + pid + '/stat', 'utf8'); return s.slice(s.lastIndexOf(')') + 2).split(' ')[19]; } catch { return undefined; } };
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\n')) >= 0; ) {
    const line = buf.slice(0, i), op = line.slice(0, 2), v = line.slice(3);
    buf = buf.slice(i + 1);
    if (op === '+p') { const t = started(Number(v)); if (t !== undefined) pids.set(Number(v), t); }
    else if (op === '-p') pids.delete(Number(v));
    else if (op === '+d') dirs.add(v);
    else if (op === '-d') dirs.delete(v);
  }
});
const reap = () => {
  for (const [pid, t] of pids) if (started(pid) === t) { try { process.kill(pid, 'SIGKILL'); } catch {} }
  for (const d of dirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch {} }
  process.exit(0);
};
process.stdin.on('end', reap);
process.stdin.on('error', reap);
`;

let watchdog: ChildProcess | undefined;

function tell(line: string): void {
  if (!watchdog) {
    try {
      watchdog = spawn(process.execPath, ['-e', WATCHDOG], {
        stdio: ['pipe', 'ignore', 'ignore'],
        detached: true,
        env: {},
      });
    } catch {
      return; // best effort: the exit handlers still cover every ending but a forced one
    }
    watchdog.on('error', () => undefined);
    watchdog.stdin?.on('error', () => undefined);
    watchdog.unref();
    (watchdog.stdin as Socket | null)?.unref();
  }
  if (!/[\n\r]/.test(line)) watchdog.stdin?.write(`${line}\n`);
}

/** Kill `child` when this process dies without stopping it; forgotten when the child exits. */
export function reapWithThisProcess(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  tell(`+p ${pid}`);
  child.once('exit', () => tell(`-p ${pid}`));
}

/** Remove `dir` when this process dies without removing it; the returned function forgets it (after removing it). */
export function removeWithThisProcess(dir: string): () => void {
  tell(`+d ${dir}`);
  return () => tell(`-d ${dir}`);
}
