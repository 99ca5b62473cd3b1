import { startEmulator, type Emulator } from '../../harness';
import { googleHarnessErrorBody, type ServiceAccountKey } from '../state';
import { createAuth } from './auth';
import { createIamContext, type GoogleIamOptions } from './context';
import { keyRoutes } from './routes-keys';

export type { GoogleIamOptions } from './context';

/**
 * Google IAM API v1, service-account keys (`projects.serviceAccounts.keys`): create (returns
 * `privateKeyData` = base64 of a real service-account key JSON with a real RSA-2048 key), list (with the
 * `keyTypes` filter), get, disable, enable, delete. At most 10 user-managed keys per account
 * (the 11th create fails with 400 FAILED_PRECONDITION "Precondition check failed.", as Google answers).
 * Each account also has one system-managed key, which never counts against the cap. Callers present
 * `Authorization: Bearer <Google access or federated token>` issued into the shared GoogleState for a
 * principal granted key administration (`grantKeyAdmin`, on given accounts or project-wide), with the cloud-platform
 * scope; an unknown or foreign account under `projects/-/` is 403 PERMISSION_DENIED, as on Google.
 * Errors are Google's `{"error": {"code", "message", "status"}}`.
 *
 * This file wires the emulator together; context.ts holds the state (grants, the org policy, key listing),
 * auth.ts the bearer check and key-admin authorization, routes-keys.ts the key operations.
 */

export interface GoogleIamEmulator extends Emulator {
  /** Base URL, e.g. http://127.0.0.1:PORT (paths are /v1/projects/...). */
  readonly endpoint: string;
  /**
   * Grant roles/iam.serviceAccountKeyAdmin to a principal (service account email or workload identity principal)
   * on the given service accounts (SA-level bindings, as infra/gcp grants it), or without `accounts` on the whole
   * project (every account, and the right to learn that an account does not exist: 404 instead of 403).
   */
  grantKeyAdmin(principal: string, accounts?: readonly string[]): void;
  /** The user-managed keys of an account, as stored (no private material). */
  userKeys(email: string): ServiceAccountKey[];
  /** Enforce (or lift) the org policy iam.disableServiceAccountKeyCreation. */
  setKeyCreationDisabled(disabled: boolean): void;
}

export async function startGoogleIam(opts: GoogleIamOptions): Promise<GoogleIamEmulator> {
  const ctx = createIamContext(opts);
  const { keyAdmins, keysOf } = ctx;
  const { resolve } = createAuth(ctx);

  const emu = await startEmulator({
    name: 'google-iam',
    port: opts.port,
    errorBody: googleHarnessErrorBody((status) => (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT')),
    routes: keyRoutes(ctx, resolve, opts),
  });

  return Object.assign(emu, {
    endpoint: emu.url,
    grantKeyAdmin: (p: string, accounts?: readonly string[]) => {
      if (!accounts) return void keyAdmins.set(p, '*');
      const g = keyAdmins.get(p);
      if (g === '*') return;
      keyAdmins.set(p, new Set([...(g ?? []), ...accounts]));
    },
    userKeys: (email: string) => keysOf(email).filter((k) => k.keyType === 'USER_MANAGED'),
    setKeyCreationDisabled: (d: boolean) => void (ctx.keyCreationDisabled = d),
  });
}
