import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../../harness';
import { recordIssuedToken } from '../../issued-tokens';
import { checkGoogleBearer, INVALID_CREDENTIAL, isEmuResponse, MISSING_CREDENTIAL } from '../bearer';
import {
  CLOUD_PLATFORM_SCOPE,
  googleError,
  googleHarnessErrorBody,
  type GoogleState,
  type ServiceAccount,
  type ServiceAccountKey,
} from '../state';

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
 */

const MAX_USER_MANAGED_KEYS = 10;
const NO_EXPIRY = '9999-12-31T23:59:59Z';

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
const DISABLE_KEY_CREATION_CONSTRAINT = 'constraints/iam.disableServiceAccountKeyCreation';

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

type KeyWithMeta = ServiceAccountKey & { readonly keyAlgorithm?: string };

const isoNoMillis = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export async function startGoogleIam(opts: GoogleIamOptions): Promise<GoogleIamEmulator> {
  const { state } = opts;
  /** principal → the accounts it administers keys of, or '*' (project-level grant). */
  const keyAdmins = new Map<string, Set<string> | '*'>();
  const isAdmin = (principal: string, email: string) => {
    const g = keyAdmins.get(principal);
    return g === '*' || (g !== undefined && g.has(email));
  };
  let keyCreationDisabled = opts.disableKeyCreation ?? false;

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

  const denied = (permission: string, resource: string) =>
    googleError(403, 'PERMISSION_DENIED', `Permission '${permission}' denied on resource '${resource}' (or it may not exist).`);

  /**
   * Authenticate, resolve projects/{project}/serviceAccounts/{email or uniqueId} and authorize `permission` on it.
   * Google checks the permission on the resolved resource: under the `-` wildcard an unknown account cannot be
   * resolved to a project, so it is 403 PERMISSION_DENIED, never 404 (the IAM reference warns of exactly this,
   * https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/get); an account the caller holds
   * no grant on (another team's, another project's) is the same 403. Only a caller with a project-level grant learns
   * that an account of that project does not exist (404).
   */
  const resolve = (req: EmuRequest, permission: string): ServiceAccount | EmuResponse => {
    const tok = checkGoogleBearer(req, state, {
      scopes: [CLOUD_PLATFORM_SCOPE],
      missingMessage: `${MISSING_CREDENTIAL} See https://developers.google.com/identity/sign-in/web/devconsole-project.`,
      invalidMessage: INVALID_CREDENTIAL,
    });
    if (isEmuResponse(tok)) return tok;
    const project = decodeURIComponent(req.params.project ?? '');
    const id = decodeURIComponent(req.params.account ?? '');
    const resource = `projects/${project}/serviceAccounts/${id}`;
    const sa = state.serviceAccounts.get(id) ?? [...state.serviceAccounts.values()].find((s) => s.uniqueId === id);
    if (!sa || (project !== '-' && project !== sa.projectId)) {
      return project !== '-' && keyAdmins.get(tok.principal) === '*'
        ? googleError(404, 'NOT_FOUND', `Unknown service account`)
        : denied(permission, resource);
    }
    if (!isAdmin(tok.principal, sa.email)) return denied(permission, resource);
    return sa;
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

  const keyPath = /^\/v1\/projects\/(?<project>[^/]+)\/serviceAccounts\/(?<account>[^/]+)\/keys\/(?<key>[0-9a-f]+)$/;
  const keyAction =
    /^\/v1\/projects\/(?<project>[^/]+)\/serviceAccounts\/(?<account>[^/]+)\/keys\/(?<key>[0-9a-f]+):(?<action>disable|enable)$/;

  const emu = await startEmulator({
    name: 'google-iam',
    port: opts.port,
    errorBody: googleHarnessErrorBody((status) => (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT')),
    routes: [
      {
        method: 'GET',
        path: '/v1/projects/:project/serviceAccounts/:account/keys',
        name: 'iam.keys.list',
        handle: (req) => {
          const sa = resolve(req, 'iam.serviceAccountKeys.list');
          if ('status' in sa) return sa;
          const types = req.url.searchParams.getAll('keyTypes');
          for (const t of types) {
            if (!['USER_MANAGED', 'SYSTEM_MANAGED', 'KEY_TYPE_UNSPECIFIED'].includes(t)) {
              return googleError(
                400,
                'INVALID_ARGUMENT',
                `Invalid value at 'key_types' (type.googleapis.com/google.iam.admin.v1.ListServiceAccountKeysRequest.KeyType), "${t}"`,
              );
            }
          }
          const keys = keysOf(sa.email).filter(
            (k) => types.length === 0 || types.includes('KEY_TYPE_UNSPECIFIED') || types.includes(k.keyType),
          );
          return { status: 200, body: keys.length ? { keys: keys.map((k) => view(k, false)) } : {} };
        },
      },
      {
        method: 'POST',
        path: '/v1/projects/:project/serviceAccounts/:account/keys',
        name: 'iam.keys.create',
        handle: (req) => {
          const sa = resolve(req, 'iam.serviceAccountKeys.create');
          if ('status' in sa) return sa;
          const body = (req.body.length ? req.json() : {}) as Record<string, unknown> | undefined;
          if (!body || typeof body !== 'object') return googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
          const pkType = body.privateKeyType ?? 'TYPE_GOOGLE_CREDENTIALS_FILE';
          if (pkType !== 'TYPE_GOOGLE_CREDENTIALS_FILE')
            return googleError(400, 'INVALID_ARGUMENT', `Unsupported private key type ${JSON.stringify(pkType)} in the sandbox.`);
          const alg = body.keyAlgorithm ?? 'KEY_ALG_RSA_2048';
          if (alg !== 'KEY_ALG_RSA_2048' && alg !== 'KEY_ALG_UNSPECIFIED')
            return googleError(400, 'INVALID_ARGUMENT', `Invalid key algorithm ${JSON.stringify(alg)}.`);
          if (keyCreationDisabled) {
            // Google's answer under the org policy (https://cloud.google.com/iam/docs/troubleshoot-org-policies):
            // same status as the key cap, but its own message and a google.rpc.PreconditionFailure naming the constraint.
            const description = 'Key creation is not allowed on this service account.';
            const e = googleError(400, 'FAILED_PRECONDITION', description);
            return {
              status: e.status,
              body: {
                error: {
                  ...e.body.error,
                  details: [
                    {
                      '@type': 'type.googleapis.com/google.rpc.PreconditionFailure',
                      violations: [
                        {
                          type: DISABLE_KEY_CREATION_CONSTRAINT,
                          subject: `projects/${sa.projectId}/serviceAccounts/${sa.email}?configvalue=${encodeURIComponent(sa.email)}`,
                          description,
                        },
                      ],
                    },
                  ],
                },
              },
            };
          }
          const list = keysOf(sa.email);
          if (list.filter((k) => k.keyType === 'USER_MANAGED').length >= MAX_USER_MANAGED_KEYS) {
            return googleError(400, 'FAILED_PRECONDITION', 'Precondition check failed.');
          }
          const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
          const keyId = randomBytes(20).toString('hex');
          const now = state.now();
          const key: KeyWithMeta = {
            name: `projects/${sa.projectId}/serviceAccounts/${sa.email}/keys/${keyId}`,
            keyId,
            serviceAccount: sa.email,
            publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
            validAfterTime: isoNoMillis(now),
            validBeforeTime: opts.keyExpiryHours ? isoNoMillis(now + opts.keyExpiryHours * 3600_000) : NO_EXPIRY,
            disabled: false,
            keyType: 'USER_MANAGED',
            keyAlgorithm: 'KEY_ALG_RSA_2048',
            // Not usable at once: the token endpoint refuses it until it has propagated.
            usableAfterMs: now + state.keyPropagationMs,
          };
          list.push(key);
          const file = {
            type: 'service_account',
            project_id: sa.projectId,
            private_key_id: keyId,
            private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
            client_email: sa.email,
            client_id: sa.uniqueId,
            auth_uri: 'https://accounts.google.com/o/oauth2/auth',
            token_uri: opts.tokenUri,
            auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
            client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(sa.email)}`,
            universe_domain: 'googleapis.com',
          };
          const privateKeyData = Buffer.from(JSON.stringify(file, null, 2)).toString('base64');
          // token-leak scan: the key file, its private key and the base64 blob are all credentials
          recordIssuedToken(privateKeyData);
          recordIssuedToken(file.private_key);
          return {
            status: 200,
            body: {
              ...view(key, false),
              privateKeyType: 'TYPE_GOOGLE_CREDENTIALS_FILE',
              privateKeyData,
            },
          };
        },
      },
      {
        method: 'POST',
        path: keyAction,
        name: 'iam.keys.toggle',
        handle: (req) => {
          const action = req.params.action!;
          const sa = resolve(req, `iam.serviceAccountKeys.${action}`);
          if ('status' in sa) return sa;
          const k = findKey(sa, req.params.key!);
          if ('status' in k) return k;
          if (k.keyType === 'SYSTEM_MANAGED')
            return googleError(400, 'FAILED_PRECONDITION', 'System-managed keys cannot be disabled or enabled.');
          k.disabled = action === 'disable';
          return { status: 200, body: {} };
        },
      },
      {
        method: 'GET',
        path: keyPath,
        name: 'iam.keys.get',
        handle: (req) => {
          const sa = resolve(req, 'iam.serviceAccountKeys.get');
          if ('status' in sa) return sa;
          const k = findKey(sa, req.params.key!);
          if ('status' in k) return k;
          const pub = req.url.searchParams.get('publicKeyType');
          return { status: 200, body: view(k, pub === 'TYPE_X509_PEM_FILE' || pub === 'TYPE_RAW_PUBLIC_KEY') };
        },
      },
      {
        method: 'DELETE',
        path: keyPath,
        name: 'iam.keys.delete',
        handle: (req) => {
          const sa = resolve(req, 'iam.serviceAccountKeys.delete');
          if ('status' in sa) return sa;
          const k = findKey(sa, req.params.key!);
          if ('status' in k) return k;
          if (k.keyType === 'SYSTEM_MANAGED')
            return googleError(400, 'FAILED_PRECONDITION', 'System-managed keys cannot be deleted.');
          const list = keysOf(sa.email);
          list.splice(list.indexOf(k), 1);
          return { status: 200, body: {} };
        },
      },
    ],
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
    setKeyCreationDisabled: (d: boolean) => void (keyCreationDisabled = d),
  });
}
