import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { CLOUD_PLATFORM_SCOPE } from '../../../local/emulators/google/state';
import type { AppContext } from '../../../shared/app/context';
import { testContext } from '../../helpers/app';
import { testLogger as createLogger } from '../../helpers/app';
import { KeyVaultSecrets } from '../../../shared/keyvault/client';
import { DAY_MS, TAG, pendingSecretName } from '../../../shared/rotation/google-keys/plan';
import { exchangeKey, parseKeyFile } from '../../../shared/google/sa-key-exchange';
import { runRotation, type RotationDeps, type RotationReport, type Step } from '../../../shared/rotation/google-keys/run';
import { rotationDepsFromSettings } from '../../../shared/rotation/google-keys/deps';

export const T0 = Date.parse('2026-01-05T03:00:00Z');

/** A controllable clock shared by the broker code and the Google / Key Vault emulators. */
export class Clock {
  t = T0;
  now = (): number => this.t;
  advanceDays(d: number): void {
    this.t += d * DAY_MS;
  }
  advanceSeconds(s: number): void {
    this.t += s * 1000;
  }
}

export interface RotationFixture {
  sb: Sandbox;
  clock: Clock;
  restore: () => void;
  /** The broker's own federated Google token (managed identity → Google STS), to call IAM directly. */
  federatedToken(): Promise<string>;
  /** The app context the rotation runs with (its Google token cache on the shared clock). */
  app(): AppContext;
  /** Start over with a fresh app context (empty caches), as a new Function instance would. */
  renewApp(): AppContext;
  deps(over?: Partial<RotationDeps>): RotationDeps;
  run(over?: Partial<RotationDeps>, dryRun?: boolean): Promise<RotationReport>;
  vault: KeyVaultSecrets;
  addAccount(name: string): { serviceAccount: string; secretName: string };
  /** What a crashed holder's lease does after its duration: end (here at once, by breaking it with period 0). */
  expireLease(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRotationFixture(env: Record<string, string> = {}): Promise<RotationFixture> {
  const sb = await startSandbox({ storage: true, env });
  const restore = sb.applyEnv();
  const clock = new Clock();
  sb.googleKeys.state.now = clock.now;
  // New keys propagate at once unless a test sets a delay (the sandbox's default is 3 s of real time).
  sb.googleKeys.state.keyPropagationMs = 0;
  sb.keyVault.now = clock.now;
  const state = sb.googleKeys.state;
  // The rotation's Google identity is the real keyless path (the sandbox's managed identity → Google STS,
  // GOOGLE_* settings from applyEnv), its token cache on the shared clock (an input, not a module swap).
  let app = testContext({ now: clock.now });
  const renewApp = () => {
    void app.close();
    app = testContext({ now: clock.now });
    return app;
  };
  const log = createLogger({ fn: 'rotation-test' });
  const deps = (over: Partial<RotationDeps> = {}): RotationDeps => {
    // Each run starts with an empty Google token cache, as a Function instance days later would: google-auth-library
    // dates the federated token by the wall clock, the emulators by the shared clock, so a token cached before
    // `advanceDays` would look fresh to the broker and expired to IAM (a test artefact, not a broker fault).
    renewApp();
    return {
      // A pause of the run passes on the shared clock (the Google emulators see time go by while rotation waits).
      ...rotationDepsFromSettings(app, log, { now: clock.now, sleep: async (ms: number) => clock.advanceSeconds(ms / 1000) }),
      ...over,
    };
  };
  return {
    sb,
    clock,
    restore,
    federatedToken: async () => (await app.google.federated().sourceAccessToken()).token,
    app: () => app,
    renewApp,
    deps,
    run: (over = {}, dryRun = false) => runRotation(deps(over), { dryRun, trigger: 'timer' }),
    vault: KeyVaultSecrets.fromSettings({ timeoutMs: 3000 }),
    addAccount(name) {
      const serviceAccount = `${name}@${SANDBOX.google.project}.iam.gserviceaccount.com`;
      state.addServiceAccount(serviceAccount);
      sb.googleKeys.iam.grantKeyAdmin(sb.googleKeys.rotationPrincipal, [serviceAccount]);
      return { serviceAccount, secretName: `${name}-key` };
    },
    async expireLease() {
      const blob = sb.storage!.admin().getContainerClient(SANDBOX.storage.container).getBlobClient('rotation-lock');
      await blob.getBlobLeaseClient().breakLease(0);
    },
    async stop() {
      await app.close();
      restore();
      await sb.stop();
    },
  };
}

/** Does this key JSON get a token from the (emulated) Google token endpoint right now? */
export async function keyWorks(f: RotationFixture, keyJson: string): Promise<boolean> {
  try {
    await exchangeKey(parseKeyFile(keyJson), {
      tokenUrl: f.sb.env.GOOGLE_OAUTH_TOKEN_URL!,
      scope: CLOUD_PLATFORM_SCOPE,
      nowMs: f.clock.now(),
      timeoutMs: 3000,
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * The invariants every finished run must leave: the latest Key Vault version is enabled and names a
 * key that exists, is enabled and works in Google; every user-managed key is named by some version
 * (no orphans); at most 10 keys.
 */
export async function assertHealthy(f: RotationFixture, acct: { serviceAccount: string; secretName: string }): Promise<string> {
  const current = await f.vault.get(acct.secretName);
  if (!current) throw new Error('no current version');
  const keyId = current.tags[TAG.keyId]!;
  const keys = f.sb.googleKeys.iam.userKeys(acct.serviceAccount);
  const k = keys.find((x) => x.keyId === keyId);
  if (!k || k.disabled) throw new Error(`current key ${keyId} is ${k ? 'disabled' : 'missing'} in Google`);
  if (parseKeyFile(current.value).private_key_id !== keyId) throw new Error('tag and key file disagree');
  if (!(await keyWorks(f, current.value))) throw new Error('current key does not work');
  // a key awaiting its proof (the pending secret's enabled version) is not an orphan
  const pending = f.sb.keyVault.versions(pendingSecretName(acct.secretName)).filter((v) => v.enabled);
  const referenced = new Set([...f.sb.keyVault.versions(acct.secretName), ...pending].map((v) => v.tags?.[TAG.keyId]));
  const orphans = keys.filter((x) => !referenced.has(x.keyId)).map((x) => x.keyId);
  if (orphans.length) throw new Error(`orphans: ${orphans.join(',')}`);
  if (keys.length > 10) throw new Error(`${keys.length} keys`);
  return keyId;
}

export const never = (): Promise<void> => new Promise<void>(() => undefined);
export type { Step };
