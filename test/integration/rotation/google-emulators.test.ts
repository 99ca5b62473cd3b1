import { SignJWT, importPKCS8 } from 'jose';
import { GoogleState, CLOUD_PLATFORM_SCOPE } from '../../../local/emulators/google/state';
import { startGoogleIam, type GoogleIamEmulator } from '../../../local/emulators/google/iam';
import { startGoogleOAuth, type GoogleOAuthEmulator } from '../../../local/emulators/google/oauth';
import { GoogleIamKeys, createRefusal } from '../../../shared/rotation/google-keys/client';
import { exchangeKey, parseKeyFile } from '../../../shared/google/sa-key-exchange';
import { BrokerError } from '../../../shared/errors';
import { settle } from '../../../local/emulators/harness';

const SA = 'keys-sa@sandbox-project.iam.gserviceaccount.com';
const ADMIN = 'principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/s';
let state: GoogleState;
let iam: GoogleIamEmulator;
let oauth: GoogleOAuthEmulator;
let token: string;

beforeAll(async () => {
  state = new GoogleState();
  state.addServiceAccount(SA);
  oauth = await startGoogleOAuth({ state });
  iam = await startGoogleIam({ state, tokenUri: oauth.tokenUrl });
  iam.grantKeyAdmin(ADMIN, [
    SA,
    'cap-sa@sandbox-project.iam.gserviceaccount.com',
    'policy-sa@sandbox-project.iam.gserviceaccount.com',
  ]);
  token = state.issueToken('federated', ADMIN, [CLOUD_PLATFORM_SCOPE], 3600).token;
});
afterAll(async () => {
  await iam?.close();
  await oauth?.close();
});

const keysUrl = (sa = SA, project = '-') =>
  `${iam.endpoint}/v1/projects/${project}/serviceAccounts/${encodeURIComponent(sa)}/keys`;
const call = (method: string, u: string, t: string | null = token, body?: unknown) =>
  fetch(u, {
    method,
    headers: { ...(t ? { authorization: `Bearer ${t}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const client = () => new GoogleIamKeys(iam.endpoint, { getAccessToken: async () => token }, 3000);
const tokenUrl = () => oauth.tokenUrl;

describe('Google IAM service-account keys emulator', () => {
  test('create returns a real key file; list filters by keyTypes; get; disable/enable; delete', async () => {
    const res = await call('POST', keysUrl(), token, {});
    expect(res.status).toBe(200);
    const created = (await res.json()) as { name: string; privateKeyData: string; keyType: string; validBeforeTime: string };
    expect(created.keyType).toBe('USER_MANAGED');
    const file = parseKeyFile(Buffer.from(created.privateKeyData, 'base64').toString('utf8'));
    expect(file.client_email).toBe(SA);
    expect(created.name).toBe(`projects/sandbox-project/serviceAccounts/${SA}/keys/${file.private_key_id}`);
    expect(file.private_key).toMatch(/^-----BEGIN PRIVATE KEY-----/);

    const all = (await (await call('GET', keysUrl())).json()) as { keys: { keyType: string }[] };
    expect(all.keys.map((k) => k.keyType).sort()).toEqual(['SYSTEM_MANAGED', 'USER_MANAGED']);
    const user = (await (await call('GET', `${keysUrl()}?keyTypes=USER_MANAGED`)).json()) as { keys: { name: string }[] };
    expect(user.keys).toHaveLength(1);
    expect((await call('GET', `${keysUrl()}?keyTypes=BOGUS`)).status).toBe(400);

    const id = file.private_key_id;
    const got = (await (await call('GET', `${keysUrl()}/${id}?publicKeyType=TYPE_X509_PEM_FILE`)).json()) as {
      publicKeyData?: string;
      privateKeyData?: string;
    };
    expect(got.publicKeyData).toBeDefined();
    expect(got.privateKeyData).toBeUndefined();

    expect(
      await exchangeKey(file, { tokenUrl: tokenUrl(), scope: CLOUD_PLATFORM_SCOPE, nowMs: Date.now(), timeoutMs: 3000 }),
    ).toMatchObject({ accessToken: expect.stringMatching(/^ya29\./) });
    expect((await call('POST', `${keysUrl()}/${id}:disable`, token, {})).status).toBe(200);
    await expect(
      exchangeKey(file, { tokenUrl: tokenUrl(), scope: CLOUD_PLATFORM_SCOPE, nowMs: Date.now(), timeoutMs: 3000 }),
    ).rejects.toMatchObject({ code: 'upstream_denied' });
    expect((await call('POST', `${keysUrl()}/${id}:enable`, token, {})).status).toBe(200);
    await exchangeKey(file, { tokenUrl: tokenUrl(), scope: CLOUD_PLATFORM_SCOPE, nowMs: Date.now(), timeoutMs: 3000 });
    expect((await call('DELETE', `${keysUrl()}/${id}`)).status).toBe(200);
    const gone = await call('GET', `${keysUrl()}/${id}`);
    expect(gone.status).toBe(404);
    expect(await gone.json()).toEqual({ error: { code: 404, message: expect.any(String), status: 'NOT_FOUND' } });
    await expect(
      exchangeKey(file, { tokenUrl: tokenUrl(), scope: CLOUD_PLATFORM_SCOPE, nowMs: Date.now(), timeoutMs: 3000 }),
    ).rejects.toBeInstanceOf(BrokerError);
    // Deleting again through the client is idempotent.
    await client().delete(SA, id);
  });

  test('the 11th user-managed key is refused with FAILED_PRECONDITION; the client maps it to key_limit_reached', async () => {
    const sa = 'cap-sa@sandbox-project.iam.gserviceaccount.com';
    state.addServiceAccount(sa);
    for (let i = 0; i < 10; i++) await client().create(sa);
    const res = await call('POST', keysUrl(sa), token, {});
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: 400, message: 'Precondition check failed.', status: 'FAILED_PRECONDITION' },
    });
    await expect(client().create(sa)).rejects.toMatchObject({ code: 'key_limit_reached' });
    expect(iam.userKeys(sa)).toHaveLength(10);
  });

  test('org policy iam.disableServiceAccountKeyCreation: FAILED_PRECONDITION with its own message and PreconditionFailure; its own reason code', async () => {
    const sa = 'policy-sa@sandbox-project.iam.gserviceaccount.com';
    state.addServiceAccount(sa);
    iam.setKeyCreationDisabled(true);
    try {
      const res = await call('POST', keysUrl(sa), token, {});
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({
        error: {
          code: 400,
          message: 'Key creation is not allowed on this service account.',
          status: 'FAILED_PRECONDITION',
          details: [
            {
              '@type': 'type.googleapis.com/google.rpc.PreconditionFailure',
              violations: [
                {
                  type: 'constraints/iam.disableServiceAccountKeyCreation',
                  subject: `projects/sandbox-project/serviceAccounts/${sa}?configvalue=${encodeURIComponent(sa)}`,
                  description: 'Key creation is not allowed on this service account.',
                },
              ],
            },
          ],
        },
      });
      const err = await client()
        .create(sa)
        .catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'key_creation_disabled',
        status: 403,
        detail: { constraint: 'iam.disableServiceAccountKeyCreation' },
      });
      expect(iam.userKeys(sa)).toHaveLength(0);
      // listing, disabling and deleting are not affected by the constraint
      await expect(client().list(sa)).resolves.toEqual([]);
    } finally {
      iam.setKeyCreationDisabled(false);
    }
    await expect(client().create(sa)).resolves.toMatchObject({ keyId: expect.any(String) });
  });

  test('classifier: FAILED_PRECONDITION on create, by its details', () => {
    const rows: [unknown, string][] = [
      [{ error: { status: 'FAILED_PRECONDITION', message: 'Precondition check failed.' } }, 'key_limit_reached'],
      [
        {
          error: {
            status: 'FAILED_PRECONDITION',
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.PreconditionFailure',
                violations: [{ type: 'constraints/iam.disableServiceAccountKeyCreation' }],
              },
            ],
          },
        },
        'key_creation_disabled',
      ],
      [
        {
          error: {
            status: 'FAILED_PRECONDITION',
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.PreconditionFailure',
                violations: [{ type: 'constraints/iam.managed.disableServiceAccountKeyCreation' }],
              },
            ],
          },
        },
        'key_creation_disabled',
      ],
      // another constraint (or the right type under another @type) is not the key-creation policy
      [
        {
          error: {
            status: 'FAILED_PRECONDITION',
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.PreconditionFailure',
                violations: [{ type: 'constraints/iam.disableServiceAccountKeyUpload' }],
              },
            ],
          },
        },
        'key_limit_reached',
      ],
      [
        {
          error: {
            status: 'FAILED_PRECONDITION',
            details: [
              {
                '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
                violations: [{ type: 'constraints/iam.disableServiceAccountKeyCreation' }],
              },
            ],
          },
        },
        'key_limit_reached',
      ],
      [{ error: { status: 'FAILED_PRECONDITION', details: 'junk' } }, 'key_limit_reached'],
    ];
    for (const [body, code] of rows) expect(createRefusal(body).code).toBe(code);
  });

  test('under projects/-/ an unknown or foreign account is 403 PERMISSION_DENIED, never 404; the client never counts that as done', async () => {
    const foreign = 'other-team@sandbox-project.iam.gserviceaccount.com';
    state.addServiceAccount(foreign); // exists, but ADMIN holds no key-admin grant on it
    const k = (await call('POST', keysUrl(), token, {}).then((r) => r.json())) as { name: string };
    const keyId = k.name.split('/').at(-1)!;
    for (const sa of ['nobody@sandbox-project.iam.gserviceaccount.com', foreign]) {
      for (const [method, u] of [
        ['GET', keysUrl(sa)],
        ['POST', keysUrl(sa)],
        ['GET', `${keysUrl(sa)}/${keyId}`],
        ['POST', `${keysUrl(sa)}/${keyId}:disable`],
        ['DELETE', `${keysUrl(sa)}/${keyId}`],
      ] as const) {
        const res = await call(method, u, token, method === 'POST' ? {} : undefined);
        expect([method, u, res.status]).toEqual([method, u, 403]);
        expect(((await res.json()) as { error: { status: string; message: string } }).error).toMatchObject({
          status: 'PERMISSION_DENIED',
          message: expect.stringContaining('(or it may not exist)'),
        });
      }
      // a delete or disable that Google refuses is a failure, not "already gone"
      await expect(client().delete(sa, keyId)).rejects.toMatchObject({
        code: 'upstream_denied',
        detail: { upstreamStatus: 'PERMISSION_DENIED' },
      });
      await expect(client().disable(sa, keyId)).rejects.toMatchObject({ code: 'upstream_denied' });
      await expect(client().list(sa)).rejects.toMatchObject({ code: 'upstream_denied' });
    }
    // a key that is gone, of an account the caller administers, is 404: the idempotent re-run counts it as done
    await client().delete(SA, keyId);
    expect((await call('DELETE', `${keysUrl()}/${keyId}`)).status).toBe(404);
    await expect(client().delete(SA, keyId)).resolves.toBeUndefined();
    await expect(client().disable(SA, keyId)).resolves.toBeUndefined();
  });

  test('authentication and authorization', async () => {
    const none = await call('GET', keysUrl(), null);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { status: string } }).error.status).toBe('UNAUTHENTICATED');
    expect((await call('GET', keysUrl(), 'ya29.unknown')).status).toBe(401);
    const stranger = state.issueToken(
      'access',
      'someone@sandbox-project.iam.gserviceaccount.com',
      [CLOUD_PLATFORM_SCOPE],
      3600,
    ).token;
    const denied = await call('POST', keysUrl(), stranger, {});
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { error: { status: string } }).error.status).toBe('PERMISSION_DENIED');
    const narrow = state.issueToken('federated', ADMIN, ['https://www.googleapis.com/auth/sqlservice.login'], 3600).token;
    expect((await call('GET', keysUrl(), narrow)).status).toBe(403);
    // only a project-level key admin learns that an account does not exist (404); under projects/-/ it is 403
    expect((await call('GET', keysUrl('nobody@sandbox-project.iam.gserviceaccount.com'))).status).toBe(403);
    expect((await call('GET', keysUrl(SA, 'other-project'))).status).toBe(403);
    const projectAdmin = 'project-admin@sandbox-project.iam.gserviceaccount.com';
    iam.grantKeyAdmin(projectAdmin);
    const pa = state.issueToken('access', projectAdmin, [CLOUD_PLATFORM_SCOPE], 3600).token;
    expect((await call('GET', keysUrl('nobody@sandbox-project.iam.gserviceaccount.com', 'sandbox-project'), pa)).status).toBe(
      404,
    );
    expect((await call('GET', keysUrl('nobody@sandbox-project.iam.gserviceaccount.com', '-'), pa)).status).toBe(403);
    await expect(new GoogleIamKeys(iam.endpoint, { getAccessToken: async () => stranger }, 3000).list(SA)).rejects.toMatchObject({
      code: 'upstream_denied',
    });
  });

  test('IAM down → upstream_unavailable; 500 → upstream_error', async () => {
    iam.inject({ fault: { kind: 'status', status: 500 }, times: 1 });
    await expect(client().list(SA)).rejects.toMatchObject({ code: 'upstream_error' });
    iam.inject({ fault: { kind: 'down' } });
    await settle(iam);
    await expect(client().list(SA)).rejects.toMatchObject({ code: 'upstream_unavailable', retryAfterSeconds: 5 });
    iam.clearFaults();
    await settle(iam);
    await expect(client().list(SA)).resolves.toEqual(expect.any(Array));
  });
});

describe('Google OAuth token endpoint emulator (JWT-bearer)', () => {
  let file: ReturnType<typeof parseKeyFile>;
  beforeAll(async () => {
    file = parseKeyFile((await client().create(SA)).keyJson);
  });
  const post = async (assertion: string, grant = 'urn:ietf:params:oauth:grant-type:jwt-bearer') => {
    const res = await fetch(tokenUrl(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: grant, assertion }).toString(),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const sign = async (claims: Record<string, unknown>, header: Record<string, unknown> = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: SA,
      aud: 'https://oauth2.googleapis.com/token',
      scope: CLOUD_PLATFORM_SCOPE,
      iat: now,
      exp: now + 3600,
      ...claims,
    })
      .setProtectedHeader({ alg: 'RS256', kid: file.private_key_id, ...header })
      .sign(await importPKCS8(file.private_key, 'RS256'));
  };

  test('a good assertion (with or without kid) gets an opaque token registered in GoogleState', async () => {
    const ok = await post(await sign({}));
    expect(ok.status).toBe(200);
    expect(state.lookupToken(ok.body.access_token as string)?.principal).toBe(SA);
    const noKid = await post(await sign({}, { kid: undefined }));
    expect(noKid.status).toBe(200);
  });

  test('refusals: wrong aud, too long-lived, expired, no scope, unknown kid, other account, wrong grant', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases = [
      await sign({ aud: 'https://example.com/token' }),
      await sign({ exp: now + 7200 }),
      await sign({ iat: now - 7200, exp: now - 3600 }),
      await sign({ scope: undefined }),
      await sign({}, { kid: 'f'.repeat(40) }),
      await sign({ iss: 'cap-sa@sandbox-project.iam.gserviceaccount.com' }),
    ];
    for (const a of cases) {
      const r = await post(a);
      expect(r.status).toBe(400);
      expect(['invalid_grant', 'invalid_scope']).toContain(r.body.error);
    }
    expect((await post(await sign({}), 'client_credentials')).body.error).toBe('unsupported_grant_type');
  });
});
