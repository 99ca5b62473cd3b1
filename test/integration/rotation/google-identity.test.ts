import { captureLogs } from '../../helpers/invoke';
import { testLogger as createLogger } from '../../helpers/app';
import { rotationConfig } from '../../../shared/config/rotation';
import { ConfigError } from '../../../shared/errors';
import { removedSettingProblems } from '../../../shared/config/settings';
import { runRotation } from '../../../shared/rotation/google-keys/run';
import { rotationDepsFromSettings } from '../../../shared/rotation/google-keys/deps';
import { checks } from '../../../shared/health/endpoint';
import { assertHealthy, startRotationFixture, type RotationFixture } from './fixture';

/**
 * #18.1: the rotation's own Google identity is the broker's one keyless source credential (GOOGLE_* settings,
 * the managed identity → Google STS → federated token), not a second STS client with settings of its own; the
 * settings it used to have are refused by name while still set.
 */

let f: RotationFixture;
let logs: ReturnType<typeof captureLogs>;

beforeAll(async () => {
  logs = captureLogs();
  f = await startRotationFixture();
});
afterAll(async () => {
  logs?.restore();
  await f?.stop();
  f?.renewApp();
});

const log = createLogger({ fn: 'rotation-identity-test' });

describe("the rotation's Google identity", () => {
  test('a run without injected tokens goes through the managed identity and Google STS (the GOOGLE_* settings), once for several IAM calls', async () => {
    f?.renewApp();
    const acct = f.addAccount('federated-sa');
    const stsBefore = f.sb.google.sts.count('sts.token');
    const deps = {
      ...rotationDepsFromSettings(f.app(), log, { now: f.clock.now, sleep: async () => undefined }),
      managed: [acct],
    };
    const r = await runRotation(deps, { dryRun: false, trigger: 'timer' });
    expect(r.status).toBe('completed');
    await assertHealthy(f, acct);
    // list + create (+ the lease's Key Vault calls): one STS exchange serves every IAM call of the run
    expect(f.sb.google.sts.count('sts.token') - stsBefore).toBe(1);
  });

  test('GOOGLE_WIF_AUDIENCE unset: config_invalid naming it', () => {
    const saved = process.env.GOOGLE_WIF_AUDIENCE;
    delete process.env.GOOGLE_WIF_AUDIENCE;
    try {
      expect(() => rotationDepsFromSettings(f.app(), log)).toThrow(
        expect.objectContaining({ code: 'config_invalid', message: expect.stringContaining('GOOGLE_WIF_AUDIENCE') }),
      );
    } finally {
      process.env.GOOGLE_WIF_AUDIENCE = saved;
    }
  });

  test.each([
    ['ROTATION_STS_URL', 'GOOGLE_STS_TOKEN_URL', 'https://sts.googleapis.com/v1/token'],
    [
      'ROTATION_WIF_AUDIENCE',
      'GOOGLE_WIF_AUDIENCE',
      '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov',
    ],
    ['ROTATION_ENTRA_RESOURCE', 'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE', 'api://AzureADTokenExchange'],
  ])(
    'a removed setting still set (%s) is refused by name, pointing at %s: section, rotation, health',
    async (old, replacement, value) => {
      process.env[old] = value;
      try {
        let err: unknown;
        try {
          rotationConfig.parse(process.env);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).problems).toContain(`${old} was removed: use ${replacement} instead, and delete ${old}`);
        expect(() => rotationDepsFromSettings(f.app(), log)).toThrow(
          expect.objectContaining({ code: 'config_invalid', message: expect.stringContaining(old) }),
        );
        expect(removedSettingProblems(process.env)).toEqual([
          `${old} was removed: use ${replacement} instead, and delete ${old}`,
        ]);
        const config = checks.find((c) => c.name === 'config')!;
        await expect(config.run(f.app())).resolves.toEqual({ status: 'fail', detail: expect.stringContaining(old) });
      } finally {
        delete process.env[old];
      }
      expect(removedSettingProblems(process.env)).toEqual([]);
    },
  );
});
