import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../../harness';
import { checkGoogleBearer, INVALID_CREDENTIAL, isEmuResponse, MISSING_CREDENTIAL } from '../bearer';
import { CLOUD_PLATFORM_SCOPE, googleError, googleHarnessErrorBody, type GoogleState } from '../state';

/**
 * IAM Service Account Credentials API, `generateAccessToken`
 * (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken):
 * the bearer (a federated token from the STS emulator, or a service account's access token) must be
 * live in GoogleState, carry the cloud-platform (or iam) scope, and be allowed to impersonate the
 * service account by its IAM bindings. `lifetime` is "Ns" with 1 ≤ N ≤ 3600; `scope` is required and
 * recorded on the issued opaque token. Errors have Google's `{"error": {"code", "message", "status"}}` shape.
 */

const IAM_SCOPE = 'https://www.googleapis.com/auth/iam';
const MAX_LIFETIME_SECONDS = 3600;

export interface ImpersonationRecord {
  readonly serviceAccount: string;
  /** Who asked (the bearer token's principal). */
  readonly principal: string;
  readonly scopes: readonly string[];
  readonly lifetimeSeconds: number;
  readonly token: string;
  readonly expireTime: string;
}

export interface IamCredentialsEmulator extends Emulator {
  /** Every successful generateAccessToken, in order. */
  readonly issued: readonly ImpersonationRecord[];
}

export interface IamCredentialsOptions {
  readonly state: GoogleState;
  readonly port?: number;
}

const err = (code: number, status: string, message: string): EmuResponse => {
  const e = googleError(code, status, message);
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=UTF-8' };
  if (code === 401) headers['www-authenticate'] = 'Bearer realm="https://accounts.google.com/"';
  return { status: e.status, headers, body: e.body };
};

/** RFC 3339 with whole seconds, as Google's JSON APIs print Timestamps: 2026-01-01T00:00:00Z. */
function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

export async function startIamCredentials(opts: IamCredentialsOptions): Promise<IamCredentialsEmulator> {
  const { state } = opts;
  const issued: ImpersonationRecord[] = [];

  const generate = (req: EmuRequest): EmuResponse => {
    const bearer = checkGoogleBearer(req, state, {
      scopes: [CLOUD_PLATFORM_SCOPE, IAM_SCOPE],
      missingMessage: MISSING_CREDENTIAL,
      invalidMessage: INVALID_CREDENTIAL,
      error: err,
    });
    if (isEmuResponse(bearer)) return bearer;
    const type = (req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const body = req.json();
    if (type !== 'application/json' || !body || typeof body !== 'object' || Array.isArray(body)) {
      return err(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
    }
    const b = body as { scope?: unknown; lifetime?: unknown; delegates?: unknown };
    const project = req.params.project!;
    const name = decodeURIComponent(req.params.account!);
    if (project !== '-') return err(400, 'INVALID_ARGUMENT', 'The project ID in the resource name must be the wildcard "-".');
    if (Array.isArray(b.delegates) && b.delegates.length > 0) {
      return err(400, 'INVALID_ARGUMENT', 'Delegation chains are not supported by this emulator.');
    }
    if (
      !Array.isArray(b.scope) ||
      b.scope.length === 0 ||
      !b.scope.every((s): s is string => typeof s === 'string' && s.length > 0)
    ) {
      return err(400, 'INVALID_ARGUMENT', 'Scope required.');
    }
    let lifetime = MAX_LIFETIME_SECONDS;
    if (b.lifetime !== undefined) {
      const lm = typeof b.lifetime === 'string' ? /^(\d{1,9})(?:\.\d{1,9})?s$/.exec(b.lifetime) : null;
      if (!lm)
        return err(
          400,
          'INVALID_ARGUMENT',
          `Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(b.lifetime)}`,
        );
      lifetime = Number(lm[1]);
      if (lifetime < 1 || lifetime > MAX_LIFETIME_SECONDS) {
        return err(400, 'INVALID_ARGUMENT', `The lifetime must be between 1s and ${MAX_LIFETIME_SECONDS}s.`);
      }
    }
    const sa = state.serviceAccounts.get(name);
    if (!sa) return err(404, 'NOT_FOUND', `Not found; Gaia id not found for email ${name}`);
    if (!state.canImpersonate(sa.email, bearer.principal)) {
      // With the ErrorInfo detail Google adds (google-github-actions/auth #340, DataDog/stratus-red-team #299).
      const denied = err(
        403,
        'PERMISSION_DENIED',
        `Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).`,
      );
      const e = (denied.body as { error: Record<string, unknown> }).error;
      e.details = [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'IAM_PERMISSION_DENIED',
          domain: 'iam.googleapis.com',
          metadata: { permission: 'iam.serviceAccounts.getAccessToken' },
        },
      ];
      return denied;
    }
    if (sa.disabled) return err(400, 'FAILED_PRECONDITION', 'The service account is disabled.');
    const t = state.issueToken('access', sa.email, b.scope, lifetime);
    const expireTime = rfc3339(t.expiresAtMs);
    issued.push({
      serviceAccount: sa.email,
      principal: bearer.principal,
      scopes: [...b.scope],
      lifetimeSeconds: lifetime,
      token: t.token,
      expireTime,
    });
    return { status: 200, body: { accessToken: t.token, expireTime } };
  };

  const emu = await startEmulator({
    name: 'google-iamcredentials',
    port: opts.port,
    errorBody: googleHarnessErrorBody((status) => (status === 413 ? 'INVALID_ARGUMENT' : 'INTERNAL')),
    routes: [
      {
        method: 'POST',
        path: /^\/v1\/projects\/(?<project>[^/]+)\/serviceAccounts\/(?<account>[^/:]+):generateAccessToken$/,
        name: 'iam.generateAccessToken',
        handle: generate,
      },
    ],
  });
  return Object.assign(emu, { issued });
}
