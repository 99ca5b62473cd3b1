import { googleRefusal } from '../../../shared/google/errors';
import { generateAccessToken } from '../../../shared/google/iamcredentials';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { BrokerError } from '../../../shared/errors';

/**
 * The broker says which fix a Google refusal needs — missing IAM binding, missing scope, attribute condition — from
 * Google's machine-readable parts (ErrorInfo reason, errors[].reason, WWW-Authenticate, the OAuth error code), never
 * from its text. Shapes: docs/emulators.md (Google refusals).
 */

describe('googleRefusal (pure)', () => {
  const info = (reason: string) => ({ error: { code: 403, status: 'PERMISSION_DENIED', details: [{ reason }] } });
  test.each([
    ['IAM Credentials without the binding', info('IAM_PERMISSION_DENIED'), null, 'missing_iam_binding'],
    ['any API, token without the scope', info('ACCESS_TOKEN_SCOPE_INSUFFICIENT'), null, 'missing_scope'],
    [
      'only the challenge header',
      {},
      'Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="x"',
      'missing_scope',
    ],
    ['SQL Admin legacy shape', { error: { code: 403, errors: [{ reason: 'notAuthorized' }] } }, null, 'missing_iam_binding'],
    ['STS attribute condition', { error: 'unauthorized_client', error_description: 'x' }, null, 'attribute_condition'],
    ['STS bad subject token', { error: 'invalid_grant' }, null, undefined],
    ['2021 body without details', { error: { code: 403, message: 'The caller does not have permission' } }, null, undefined],
    ['not JSON', undefined, null, undefined],
  ])('%s', (_n, body, header, want) => expect(googleRefusal(body, header)).toBe(want));

  test('the text alone decides nothing', () => {
    expect(googleRefusal({ error: { message: 'Request had insufficient authentication scopes.' } })).toBeUndefined();
  });
});

describe('IAM Credentials refusals through the emulator', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await startSandbox();
  });
  afterAll(async () => {
    await sb?.stop();
  });
  const issue = (principal: string, scopes: string[]) => sb.google.state.issueToken('access', principal, scopes, 600).token;
  const refusalOf = async (sa: string, sourceToken: string) => {
    try {
      await generateAccessToken({
        endpoint: sb.env.GOOGLE_IAM_CREDENTIALS_ENDPOINT!,
        sourceToken,
        serviceAccount: sa,
        scopes: [SQL_LOGIN_SCOPE],
        lifetimeSeconds: 600,
        timeoutMs: 3000,
      });
    } catch (e) {
      expect(e).toBeInstanceOf(BrokerError);
      const err = e as BrokerError;
      expect(err.message).not.toMatch(/Permission|insufficient|denied on resource/);
      return err.detail?.refusal;
    }
    throw new Error('expected a refusal');
  };

  test('no IAM binding → missing_iam_binding; a token without the scope → missing_scope', async () => {
    const other = 'refusal-other@sandbox-project.iam.gserviceaccount.com';
    sb.google.state.addServiceAccount(other);
    const caller = SANDBOX.google.readerServiceAccount;
    expect(await refusalOf(other, issue(caller, ['https://www.googleapis.com/auth/cloud-platform']))).toBe('missing_iam_binding');
    expect(await refusalOf(other, issue(caller, [SQL_LOGIN_SCOPE]))).toBe('missing_scope');
  });
});
