import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Loads every COMPILED function module (dist/functions/*.js, what `func start` and Azure load through
 * package.json "main") and checks each registration. `npm test` builds first.
 */
const root = join(__dirname, '..', '..');
const distFunctions = join(root, 'dist', 'functions');

interface Reg {
  name: string;
  options?: { route?: string; methods?: string[]; authLevel?: string; handler: unknown };
  timer?: { schedule: string; handler: unknown; runOnStartup?: boolean };
}

beforeAll(() => {
  if (!existsSync(distFunctions)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

test('package.json main points the Functions host at every compiled function module', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require(join(root, 'package.json')) as { main: string };
  expect(pkg.main).toBe('dist/functions/*.js');
  const sources = readdirSync(join(root, 'functions'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.replace(/\.ts$/, '.js'));
  const compiled = readdirSync(distFunctions).filter((f) => f.endsWith('.js'));
  expect(compiled.sort()).toEqual(sources.sort()); // no stale module left in dist/ either
});

/** One row per compiled module: the whole registration, handlers reduced to their type. */
const EXPECTED = [
  {
    file: 'admin-deny-remove.js',
    name: 'adminDenyRemove',
    http: { route: 'admin/deny/{id}', methods: ['DELETE'], authLevel: 'anonymous' },
  },
  { file: 'admin-deny.js', name: 'adminDeny', http: { route: 'admin/deny', methods: ['POST'], authLevel: 'anonymous' } },
  {
    file: 'admin-policy-history.js',
    name: 'adminPolicyHistory',
    http: { route: 'admin/policy/history', methods: ['GET'], authLevel: 'anonymous' },
  },
  {
    file: 'admin-policy.js',
    name: 'adminPolicy',
    http: { route: 'admin/policy', methods: ['GET', 'PUT'], authLevel: 'anonymous' },
  },
  { file: 'admin-rotate.js', name: 'adminRotate', http: { route: 'admin/rotate', methods: ['POST'], authLevel: 'anonymous' } },
  { file: 'explain.js', name: 'explain', http: { route: 'policy/explain', methods: ['POST'], authLevel: 'anonymous' } },
  { file: 'health.js', name: 'health', http: { route: 'health', methods: ['GET'], authLevel: 'anonymous' } },
  {
    file: 'mcp-metadata.js',
    name: 'mcpMetadata',
    http: { route: '.well-known/oauth-protected-resource/api/mcp', methods: ['GET'], authLevel: 'anonymous' },
  },
  { file: 'mcp.js', name: 'mcp', http: { route: 'mcp', methods: ['POST', 'GET', 'DELETE'], authLevel: 'anonymous' } },
  {
    file: 'prewarm-timer.js',
    name: 'prewarmTimer',
    timer: { schedule: '0 */5 * * * *', runOnStartup: false, useMonitor: false },
  },
  { file: 'query.js', name: 'query', http: { route: 'query/{name}', methods: ['POST'], authLevel: 'anonymous' } },
  {
    file: 'rotation-timer.js',
    name: 'rotationTimer',
    timer: { schedule: '%ROTATION_SCHEDULE%', runOnStartup: false, useMonitor: true },
  },
  { file: 'token.js', name: 'token', http: { route: 'token', methods: ['POST'], authLevel: 'anonymous' } },
];

test('the compiled functions register exactly these triggers: names, routes, methods, authLevel, timer schedules', () => {
  const actual = readdirSync(join(root, 'functions'))
    .filter((f) => f.endsWith('.ts') && f !== 'app.ts') // app.ts: the process hooks, no trigger (below)
    .map((f) => f.replace(/\.ts$/, '.js'))
    .sort()
    .map((file) => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(join(distFunctions, file)) as { registration?: Record<string, unknown> };
      const { name, options, timer, ...rest } = (mod.registration ?? {}) as Reg & Record<string, unknown>;
      expect(rest).toEqual({}); // nothing registered beside the trigger
      if (options) {
        const {
          route,
          methods,
          authLevel,
          handler,
          return: ret,
          ...extra
        } = options as NonNullable<Reg['options']> & { return?: { type?: string } };
        expect(extra).toEqual({}); // no extra inputs or outputs
        expect(typeof handler).toBe('function');
        expect(ret?.type).toBe('http');
        return { file, name, http: { route, methods, authLevel } };
      }
      const { handler, ...t } = (timer ?? {}) as NonNullable<Reg['timer']> & { useMonitor?: boolean };
      expect(typeof handler).toBe('function');
      return { file, name, timer: t };
    });
  expect(actual).toEqual(EXPECTED);
});

test('functions/app.ts registers no trigger (only the terminate hook and the start-up prewarm)', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(join(distFunctions, 'app.js')) as Record<string, unknown>;
  expect(mod.registration).toBeUndefined();
  expect(mod.registrations).toBeUndefined();
});

test('host.json routes functions under /api and uses extension bundle v4', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const host = require(join(root, 'host.json')) as {
    version: string;
    extensions: { http: { routePrefix: string } };
    extensionBundle: { id: string };
  };
  expect(host.version).toBe('2.0');
  expect(host.extensions.http.routePrefix).toBe('api');
  expect(host.extensionBundle.id).toBe('Microsoft.Azure.Functions.ExtensionBundle');
});
