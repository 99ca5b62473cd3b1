import { startSandbox, type Sandbox } from '../../local/sandbox';
import { SANDBOX } from '../../local/ids';
import type { MintOptions } from '../../local/emulators/entra';

export { SANDBOX };

export interface Fixture {
  sandbox: Sandbox;
  restoreEnv: () => void;
  /** A gateway (client) token: the APIM managed identity. */
  gateway(opts?: MintOptions): Promise<string>;
  /** An end-caller (subject) token, Orders.Read by default. */
  caller(opts?: MintOptions): Promise<string>;
  stop(): Promise<void>;
}

/** Start the sandbox on ephemeral ports and point process.env at it. */
export async function startFixture(env: Record<string, string> = {}): Promise<Fixture> {
  const sandbox = await startSandbox({ env: { BROKER_JWKS_COOLDOWN_SECONDS: '0', ...env } });
  const restoreEnv = sandbox.applyEnv();
  return {
    sandbox,
    restoreEnv,
    gateway: (o = {}) =>
      sandbox.entra.mint({
        oid: SANDBOX.gatewayObjectId,
        appId: SANDBOX.gatewayAppId,
        aud: SANDBOX.clientAudience,
        version: '1.0',
        ...o,
      }),
    caller: (o = {}) =>
      sandbox.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'], ...o }),
    async stop() {
      restoreEnv();
      await sandbox.stop();
    },
  };
}

export const CLOUDSQL_RESOURCE = `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
