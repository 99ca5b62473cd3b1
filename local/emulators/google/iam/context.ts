import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { EmuResponse } from '../../harness';
import { googleError, type GoogleState, type ServiceAccount, type ServiceAccountKey } from '../state';

/**
 * The state of the IAM emulator (key-admin grants, the key-creation org policy, keys kept in the shared GoogleState)
 * and the helpers its routes share: the key listing of an account (with its system-managed key), key views, lookup.
 */

export const MAX_USER_MANAGED_KEYS = 10;
export const NO_EXPIRY = '9999-12-31T23:59:59Z';

export interface GoogleIamOptions {
  state: GoogleState;
  port?: number;
  /** token_uri written into created key files (the sandbox OAuth token endpoint). */
  tokenUri: string;
  /** Like the org policy constraints/iam.serviceAccountKeyExpiryHours: keys expire after this many hours. */
  keyExpiryHours?: number;
  /** The org policy constraints/iam.disableServiceAccountKeyCreation is enforced (default false). */
  disableKeyCreation?: boolean;
}

/** The constraint Google names in the PreconditionFailure violation when key creation is disabled. */
export const DISABLE_KEY_CREATION_CONSTRAINT = 'constraints/iam.disableServiceAccountKeyCreation';

export type KeyWithMeta = ServiceAccountKey & { readonly keyAlgorithm?: string };

export const isoNoMillis = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
export function createIamContext(opts: GoogleIamOptions) {
  const { state } = opts;
  /** principal → the accounts it administers keys of, or '*' (project-level grant). */
  const keyAdmins = new Map<string, Set<string> | '*'>();
  const isAdmin = (principal: string, email: string) => {
    const g = keyAdmins.get(principal);
    return g === '*' || (g !== undefined && g.has(email));
  };

  const keysOf = (email: string): KeyWithMeta[] => {
    let list = state.keys.get(email);
    if (!list) {
      list = [];
      state.keys.set(email, list);
    }
    if (!list.some((k) => k.keyType === 'SYSTEM_MANAGED')) {
      const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const keyId = randomBytes(20).toString('hex');
      const sa = state.serviceAccounts.get(email)!;
      list.unshift({
        name: `projects/${sa.projectId}/serviceAccounts/${email}/keys/${keyId}`,
        keyId,
        serviceAccount: email,
        publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        validAfterTime: isoNoMillis(state.now()),
        validBeforeTime: isoNoMillis(state.now() + 14 * 86400_000),
        disabled: false,
        keyType: 'SYSTEM_MANAGED',
      });
    }
    return list;
  };

  const view = (k: KeyWithMeta, withPublic: boolean) => ({
    name: k.name,
    validAfterTime: k.validAfterTime,
    validBeforeTime: k.validBeforeTime,
    keyAlgorithm: k.keyAlgorithm ?? 'KEY_ALG_RSA_2048',
    keyOrigin: 'GOOGLE_PROVIDED',
    keyType: k.keyType,
    ...(k.disabled ? { disabled: true } : {}),
    ...(withPublic ? { publicKeyData: Buffer.from(k.publicKeyPem).toString('base64') } : {}),
  });

  const findKey = (sa: ServiceAccount, keyId: string): KeyWithMeta | EmuResponse => {
    const k = keysOf(sa.email).find((x) => x.keyId === keyId);
    return (
      k ??
      googleError(
        404,
        'NOT_FOUND',
        `Service account key projects/${sa.projectId}/serviceAccounts/${sa.email}/keys/${keyId} does not exist.`,
      )
    );
  };

  return {
    state,
    keyAdmins,
    isAdmin,
    /** The org policy iam.disableServiceAccountKeyCreation is enforced. */
    keyCreationDisabled: opts.disableKeyCreation ?? false,
    keysOf,
    view,
    findKey,
  };
}

export type IamContext = ReturnType<typeof createIamContext>;
