import { optionList, optionValue, parseCliArgs } from './cli-args';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SANDBOX } from './ids';
import { CURRENT_LINK } from './sandbox';

/**
 * `npm run dev-token -- [--oid ID] [--roles a,b] [--scp "s1 s2"] [--groups g1,g2] [--aud AUD] [--tid TID]
 *   [--expires-in SECONDS] [--v1] [--client]` prints an access token signed by the running sandbox's
 * Entra emulator. `--client` mints the gateway's (APIM managed identity) token instead of a caller's.
 */

const HELP = `Usage: npm run dev-token -- [options]
  --client             the gateway (APIM managed identity) token: oid ${SANDBOX.gatewayObjectId}, aud ${SANDBOX.clientAudience}
  --oid ID             caller object id (default ${SANDBOX.readerObjectId})
  --roles a,b          app roles (e.g. Orders.Read, Orders.Analyst, ${SANDBOX.adminRole})
  --scp "a b"          delegated scopes
  --groups g1,g2       group object ids
  --aud AUD            audience (default: the API's client id ${SANDBOX.subjectAppId} in a v2.0 token, its App ID URI
                       ${SANDBOX.subjectAudience} in a v1.0 one; with --client the broker's ${SANDBOX.clientAppId} / ${SANDBOX.clientAudience})
  --tid TID            tenant (default ${SANDBOX.tenantId})
  --expires-in SECS    lifetime in seconds (default 3600; negative gives an expired token)
  --v1                 a v1.0 token (issuer sts.windows.net, aud the App ID URI) instead of v2.0 (aud the client id);
                       --client tokens are v1.0 unless --v2
  --v2                 a v2.0 token (with --client)
  --mcp                a v2.0 token for the MCP resource (aud ${SANDBOX.mcp.appId}) from the approved agent host
                       (azp ${SANDBOX.mcp.agentHostAppId}), scp ${SANDBOX.mcp.scope} (plus --scp), roles Orders.Read unless --roles
  --agent              with --mcp: the token of an Entra agent identity acting for the user (azp
                       ${SANDBOX.mcp.agentIdentityAppId}, idtyp user, xms_act_fct 11, xms_par_app_azp ${SANDBOX.mcp.agentBlueprintAppId})`;

async function main(): Promise<void> {
  const args = parseCliArgs(process.argv.slice(2), ['client', 'v1', 'v2', 'help', 'mcp', 'agent']);
  if (args.help) {
    process.stdout.write(HELP + '\n');
    return;
  }
  const known = new Set([
    'client',
    'v1',
    'v2',
    'mcp',
    'agent',
    'oid',
    'roles',
    'scp',
    'groups',
    'aud',
    'tid',
    'expires-in',
    'help',
  ]);
  for (const k of Object.keys(args)) if (!known.has(k)) throw new Error(`Unknown option --${k}.\n${HELP}`);
  let state: { entraUrl: string };
  // The fixed-port sandbox links .sandbox/current to its run directory; another one prints its SANDBOX_STATE_DIR.
  const dir = process.env.SANDBOX_STATE_DIR || CURRENT_LINK;
  try {
    state = JSON.parse(readFileSync(join(dir, 'sandbox.json'), 'utf8')) as { entraUrl: string };
  } catch {
    throw new Error(
      `No running sandbox found (${join(dir, 'sandbox.json')}). Start it first with \`npm start\` (or set SANDBOX_STATE_DIR).`,
    );
  }
  const str = (k: string) => optionValue(args, k);
  const list = (k: string) => optionList(args, k);
  const client = args.client === true;
  if (args.v1 === true && args.v2 === true) throw new Error('--v1 and --v2 exclude each other.');
  // Entra: a v2.0 token's aud is always the API's client id, a v1.0 token's the App ID URI asked for.
  const version = args.v1 === true || (client && args.v2 !== true) ? '1.0' : '2.0';
  const defaultAud = client
    ? version === '1.0'
      ? SANDBOX.clientAudience
      : SANDBOX.clientAppId
    : version === '1.0'
      ? SANDBOX.subjectAudience
      : SANDBOX.subjectAppId;
  if (args.agent === true && args.mcp !== true) throw new Error('--agent needs --mcp.');
  if (args.mcp === true && (client || args.v1 === true))
    throw new Error('--mcp excludes --client and --v1 (MCP takes v2.0 tokens only).');
  const expiresIn = str('expires-in');
  if (expiresIn !== undefined && !/^-?\d+$/.test(expiresIn)) throw new Error('--expires-in must be whole seconds.');
  const mcp =
    args.mcp === true
      ? {
          aud: str('aud') ?? SANDBOX.mcp.appId,
          appId: args.agent === true ? SANDBOX.mcp.agentIdentityAppId : SANDBOX.mcp.agentHostAppId,
          scp: [SANDBOX.mcp.scope, str('scp')].filter(Boolean).join(' '),
          roles: list('roles') ?? ['Orders.Read'],
          ...(args.agent === true
            ? { extra: { idtyp: 'user', xms_act_fct: '3 11', xms_par_app_azp: SANDBOX.mcp.agentBlueprintAppId } }
            : {}),
        }
      : {};
  const body = {
    tenantId: str('tid') ?? SANDBOX.tenantId,
    oid: str('oid') ?? (client ? SANDBOX.gatewayObjectId : SANDBOX.readerObjectId),
    appId: client ? SANDBOX.gatewayAppId : undefined,
    aud: str('aud') ?? defaultAud,
    roles: list('roles'),
    scp: str('scp'),
    groups: list('groups'),
    version,
    expiresIn: expiresIn === undefined ? undefined : Number(expiresIn),
    ...mcp,
  };
  let res: Response;
  try {
    res = await fetch(`${state.entraUrl}/_emulator/mint`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
  } catch {
    throw new Error(`The sandbox at ${state.entraUrl} does not answer. Is \`npm start\` still running?`);
  }
  if (!res.ok) throw new Error(`The sandbox refused to mint a token (HTTP ${res.status}).`);
  const { access_token } = (await res.json()) as { access_token: string };
  process.stdout.write(access_token + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`dev-token: ${(e as Error).message}\n`);
  process.exit(1);
});
