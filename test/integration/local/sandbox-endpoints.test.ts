import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { loadAllSections } from '../../../local/settings-table';
import { allSettings } from '../../../shared/config/settings';

/**
 * A sandbox broker talks to emulators only: every URL the sandbox hands the broker names a loopback host. Without
 * PostgreSQL (the default) the SQL Admin API emulator still runs, so the token exchange's connectSettings never
 * reaches for the real sqladmin.googleapis.com (it once did, every 30 s of a bench run).
 */

let sb: Sandbox;

beforeAll(async () => {
  sb = await startSandbox();
});

afterAll(async () => {
  await sb.stop();
});

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\]|[a-z0-9.-]+\.localhost)$/;

test('every URL setting of the sandbox, set or defaulted, names a loopback host', () => {
  loadAllSections();
  const effective = new Map<string, string>(
    allSettings().flatMap((s) => (typeof s.default === 'string' ? [[s.name, s.default] as const] : [])),
  );
  for (const [k, v] of Object.entries(sb.env)) effective.set(k, v);
  const urls = [...effective].filter(([, v]) => /^https?:\/\//.test(v));
  expect(urls.length).toBeGreaterThan(5);
  const remote = urls.filter(([, v]) => !LOOPBACK.test(new URL(v).hostname));
  expect(remote).toEqual([]);
});

test('the Cloud SQL Admin API is emulated even without PostgreSQL', () => {
  expect(sb.postgres).toBeUndefined();
  expect(sb.env.CLOUDSQL_ADMIN_ENDPOINT).toBe(sb.sqlAdmin!.url);
});
