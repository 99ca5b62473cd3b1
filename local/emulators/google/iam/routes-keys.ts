import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { Route } from '../../harness';
import { recordIssuedToken } from '../../issued-tokens';
import { googleError } from '../state';
import type { Resolve } from './auth';
import {
  DISABLE_KEY_CREATION_CONSTRAINT,
  isoNoMillis,
  MAX_USER_MANAGED_KEYS,
  NO_EXPIRY,
  type GoogleIamOptions,
  type IamContext,
  type KeyWithMeta,
} from './context';

/** `projects.serviceAccounts.keys`: list, create, disable/enable, get, delete. */
export function keyRoutes(ctx: IamContext, resolve: Resolve, opts: GoogleIamOptions): Route[] {
  const { state, keysOf, view, findKey } = ctx;

  const keyPath = /^\/v1\/projects\/(?<project>[^/]+)\/serviceAccounts\/(?<account>[^/]+)\/keys\/(?<key>[0-9a-f]+)$/;
  const keyAction =
    /^\/v1\/projects\/(?<project>[^/]+)\/serviceAccounts\/(?<account>[^/]+)\/keys\/(?<key>[0-9a-f]+):(?<action>disable|enable)$/;

  return [
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
        if (ctx.keyCreationDisabled) {
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
  ];
}
