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

function loadCompiled(): Map<string, Reg> {
  const out = new Map<string, Reg>();
  for (const f of readdirSync(distFunctions).filter((f) => f.endsWith('.js'))) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(join(distFunctions, f)) as { registration?: Reg; handler?: unknown };
    expect(mod.registration).toBeDefined();
    out.set(mod.registration!.name, mod.registration!);
  }
  return out;
}

beforeAll(() => {
  if (!existsSync(distFunctions)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
});

test('package.json main points the Functions host at every compiled function module', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require(join(root, 'package.json')) as { main: string };
  expect(pkg.main).toBe('dist/functions/*.js');
  const sources = readdirSync(join(root, 'functions')).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '.js'));
  const compiled = readdirSync(distFunctions).filter((f) => f.endsWith('.js'));
  expect(compiled.sort()).toEqual(expect.arrayContaining(sources.sort()));
});

test('every compiled function registers with the expected trigger', () => {
  const regs = loadCompiled();
  const expectHttp = (name: string, route: string, methods: string[]) => {
    const r = regs.get(name);
    expect(r).toBeDefined();
    expect(r!.options).toMatchObject({ route, methods, authLevel: 'anonymous' });
    expect(typeof r!.options!.handler).toBe('function');
  };
  expectHttp('token', 'token', ['POST']);
  expectHttp('explain', 'policy/explain', ['POST']);
  expectHttp('health', 'health', ['GET']);
  for (const r of regs.values()) {
    if (r.timer) {
      expect(r.timer.schedule).toMatch(/^%[A-Z_]+%$|^(\S+\s+){5}\S+$/);
      expect(typeof r.timer.handler).toBe('function');
    } else {
      expect(r.options?.route).toMatch(/^[a-z/{}]+$/i);
      expect(r.options?.methods?.length).toBeGreaterThan(0);
    }
  }
});

test('host.json routes functions under /api and uses extension bundle v4', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const host = require(join(root, 'host.json')) as { version: string; extensions: { http: { routePrefix: string } }; extensionBundle: { id: string } };
  expect(host.version).toBe('2.0');
  expect(host.extensions.http.routePrefix).toBe('api');
  expect(host.extensionBundle.id).toBe('Microsoft.Azure.Functions.ExtensionBundle');
});
