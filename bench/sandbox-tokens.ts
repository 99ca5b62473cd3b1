import { SANDBOX } from '../local/ids';
import type { Sandbox } from '../local/sandbox';

/**
 * The tokens a bench drives the sandbox broker with, two hours each: the gateway's (v1.0, the client audience), the
 * reader's (`Orders.Read`, the subject audience) and the approved agent host's MCP token for the same reader.
 */
export async function benchTokens(sb: Pick<Sandbox, 'entra'>): Promise<{ gateway: string; caller: string; agent: string }> {
  const [gateway, caller, agent] = await Promise.all([
    sb.entra.mint({
      oid: SANDBOX.gatewayObjectId,
      appId: SANDBOX.gatewayAppId,
      aud: SANDBOX.clientAudience,
      version: '1.0',
      expiresIn: 7200,
    }),
    sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'], expiresIn: 7200 }),
    sb.entra.mint({
      resource: SANDBOX.mcp.appIdUri,
      appId: SANDBOX.mcp.agentHostAppId,
      scp: SANDBOX.mcp.scope,
      oid: SANDBOX.readerObjectId,
      roles: ['Orders.Read'],
      expiresIn: 7200,
    }),
  ]);
  return { gateway, caller, agent };
}
