import { createLocalJWKSet, jwtVerify, errors as joseErrors } from 'jose';
import type { EntraEmulator } from '../entra';

/**
 * CosmosDB data-plane RBAC (Entra ID tokens, `Authorization: type=aad&ver=1.0&sig=<JWT>`), as the references
 * describe it (https://learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac,
 * https://learn.microsoft.com/azure/cosmos-db/nosql/security/reference-data-plane-actions):
 * - the token is an Entra access token: RS256 signature from the tenant's keys, issuer of an allowed tenant (v1 or v2),
 *   `aud` = `https://{account}.documents.azure.com`, inside its `nbf`/`exp`; anything else is 401;
 * - role definitions carry `dataActions` (a trailing `*` matches every action under that prefix);
 * - role assignments bind a principal (the token's `oid`) to a definition at a scope: `/`, `/dbs/{db}` or
 *   `/dbs/{db}/colls/{coll}` (scopes stop at the container);
 * - a request whose action is not granted at a scope covering its resource is 403, substatus 5300
 *   (AAD_REQUEST_NOT_AUTHORIZED), with a message naming the principal, the action and the resource.
 * Management operations (databases, containers, users, permissions) have no data action: always 403.
 */

const ACTIONS = 'Microsoft.DocumentDB/databaseAccounts';
const DATA_ACTIONS = {
  readMetadata: `${ACTIONS}/readMetadata`,
  read: `${ACTIONS}/sqlDatabases/containers/items/read`,
  create: `${ACTIONS}/sqlDatabases/containers/items/create`,
  upsert: `${ACTIONS}/sqlDatabases/containers/items/upsert`,
  replace: `${ACTIONS}/sqlDatabases/containers/items/replace`,
  delete: `${ACTIONS}/sqlDatabases/containers/items/delete`,
  executeQuery: `${ACTIONS}/sqlDatabases/containers/executeQuery`,
  readChangeFeed: `${ACTIONS}/sqlDatabases/containers/readChangeFeed`,
} as const;

export interface RoleDefinition {
  readonly id: string;
  readonly roleName: string;
  readonly dataActions: readonly string[];
}

export interface RoleAssignment {
  readonly principalId: string;
  readonly roleDefinitionId: string;
  /** `/`, `/dbs/{db}` or `/dbs/{db}/colls/{coll}`. */
  readonly scope: string;
}

/** The two built-in data-plane roles (ids and actions from the RBAC reference). */
const BUILT_IN_ROLES: readonly RoleDefinition[] = [
  {
    id: '00000000-0000-0000-0000-000000000001',
    roleName: 'Cosmos DB Built-in Data Reader',
    dataActions: [
      DATA_ACTIONS.readMetadata,
      `${ACTIONS}/sqlDatabases/containers/executeQuery`,
      `${ACTIONS}/sqlDatabases/containers/readChangeFeed`,
      DATA_ACTIONS.read,
    ],
  },
  {
    id: '00000000-0000-0000-0000-000000000002',
    roleName: 'Cosmos DB Built-in Data Contributor',
    dataActions: [
      DATA_ACTIONS.readMetadata,
      `${ACTIONS}/sqlDatabases/containers/*`,
      `${ACTIONS}/sqlDatabases/containers/items/*`,
    ],
  },
];

const SCOPE = /^\/(dbs\/[^/]+(\/colls\/[^/]+)?)?$/;

function validScope(scope: string): boolean {
  return SCOPE.test(scope);
}

function matches(pattern: string, action: string): boolean {
  return pattern.endsWith('/*') ? action.startsWith(pattern.slice(0, -1)) : pattern === action;
}

function covers(assignmentScope: string, resourceScope: string): boolean {
  return assignmentScope === '/' || resourceScope === assignmentScope || resourceScope.startsWith(`${assignmentScope}/`);
}

export interface Required {
  readonly action: string;
  /** The resource the action is checked on, as a scope (`/`, `/dbs/db`, `/dbs/db/colls/c`). */
  readonly scope: string;
  /**
   * Metadata reads of an ancestor (the account, a database) that the SDK needs to reach a container: allowed when
   * the principal holds readMetadata at that scope or any scope below it (the reference is silent; see emulators.md).
   */
  readonly ancestorMetadata?: boolean;
}

/** The data action a gateway request needs, or undefined for an operation no data action covers. */
export function requiredAction(
  method: string,
  segments: readonly string[],
  isQuery: boolean,
  isUpsert: boolean,
  changeFeed: boolean,
): Required | undefined {
  const s = segments;
  if (s.length === 0)
    return method === 'GET' ? { action: DATA_ACTIONS.readMetadata, scope: '/', ancestorMetadata: true } : undefined;
  if (s[0] !== 'dbs') return undefined;
  if (s.length === 1) return method === 'GET' ? { action: DATA_ACTIONS.readMetadata, scope: '/' } : undefined;
  const dbScope = `/dbs/${s[1]}`;
  if (s.length === 2)
    return method === 'GET' ? { action: DATA_ACTIONS.readMetadata, scope: dbScope, ancestorMetadata: true } : undefined;
  if (s[2] !== 'colls') return undefined; // users, permissions: management, never data-plane RBAC
  if (s.length === 3) return method === 'GET' ? { action: DATA_ACTIONS.readMetadata, scope: dbScope } : undefined;
  const collScope = `${dbScope}/colls/${s[3]}`;
  if (s.length === 4 || s[4] === 'pkranges')
    return method === 'GET' ? { action: DATA_ACTIONS.readMetadata, scope: collScope } : undefined;
  if (s[4] !== 'docs') return undefined;
  if (s.length === 5) {
    if (method === 'GET')
      return { action: changeFeed ? DATA_ACTIONS.readChangeFeed : DATA_ACTIONS.executeQuery, scope: collScope };
    if (method === 'POST')
      return {
        action: isQuery ? DATA_ACTIONS.executeQuery : isUpsert ? DATA_ACTIONS.upsert : DATA_ACTIONS.create,
        scope: collScope,
      };
    return undefined;
  }
  if (s.length === 6) {
    if (method === 'GET') return { action: DATA_ACTIONS.read, scope: collScope };
    if (method === 'PUT') return { action: DATA_ACTIONS.replace, scope: collScope };
    if (method === 'DELETE') return { action: DATA_ACTIONS.delete, scope: collScope };
  }
  return undefined;
}

export interface AadPrincipal {
  readonly oid: string;
}

export type AadResult = { ok: true; principal: AadPrincipal } | { ok: false; message: string };

export class CosmosRbac {
  private readonly definitions = new Map<string, RoleDefinition>(BUILT_IN_ROLES.map((r) => [r.id, r]));
  private readonly assignments: RoleAssignment[] = [];

  constructor(
    private readonly account: string,
    private readonly entra: EntraEmulator | undefined,
    private readonly now: () => number,
  ) {}

  defineRole(def: RoleDefinition): void {
    if (def.dataActions.length === 0 || def.dataActions.some((a) => !a.startsWith(`${ACTIONS}/`))) {
      throw new Error(`role ${def.roleName}: every data action must start with ${ACTIONS}/`);
    }
    this.definitions.set(def.id, def);
  }

  assignRole(a: RoleAssignment): void {
    if (!validScope(a.scope))
      throw new Error(`role assignment scope "${a.scope}" must be /, /dbs/{db} or /dbs/{db}/colls/{coll}`);
    if (!this.definitions.has(a.roleDefinitionId)) throw new Error(`role definition ${a.roleDefinitionId} does not exist`);
    this.assignments.push(a);
  }

  removeAssignments(principalId: string): void {
    for (let i = this.assignments.length - 1; i >= 0; i--)
      if (this.assignments[i]!.principalId === principalId) this.assignments.splice(i, 1);
  }

  /** Validate an Entra access token for this account: signature, issuer, audience, lifetime, oid. */
  async verify(token: string): Promise<AadResult> {
    if (!this.entra) return { ok: false, message: 'Microsoft Entra ID authentication is not enabled for this account.' };
    const tenants = this.entra.tenants;
    try {
      const jwks = createLocalJWKSet({ keys: this.entra.keys.map((k) => k.publicJwk) });
      const { payload } = await jwtVerify(token, jwks, {
        algorithms: ['RS256'],
        audience: `https://${this.account}.documents.azure.com`,
        issuer: tenants.flatMap((t) => [`https://sts.windows.net/${t}/`, `https://login.microsoftonline.com/${t}/v2.0`]),
        currentDate: new Date(this.now()),
        clockTolerance: 0,
        requiredClaims: ['exp', 'oid', 'tid'],
      });
      if (typeof payload.tid !== 'string' || !tenants.includes(payload.tid.toLowerCase()))
        return { ok: false, message: 'The AAD token was issued for another tenant.' };
      return { ok: true, principal: { oid: String(payload.oid).toLowerCase() } };
    } catch (e) {
      const why =
        e instanceof joseErrors.JWTExpired
          ? 'The AAD token has expired.'
          : e instanceof joseErrors.JWTClaimValidationFailed
            ? `The AAD token failed claim validation (${e.claim}).`
            : 'The AAD token could not be validated (signature, format or signing key).';
      return { ok: false, message: `Failed to validate AAD token. ${why}` };
    }
  }

  /** undefined when allowed, else the message of the 403. */
  authorize(p: AadPrincipal, need: Required | undefined, what: string): string | undefined {
    const mine = this.assignments.filter((a) => a.principalId === p.oid);
    const grants = (scopeOk: (scope: string) => boolean, action: string) =>
      mine.some(
        (a) => scopeOk(a.scope) && (this.definitions.get(a.roleDefinitionId)?.dataActions ?? []).some((d) => matches(d, action)),
      );
    if (need) {
      if (grants((scope) => covers(scope, need.scope), need.action)) return undefined;
      if (need.ancestorMetadata && grants((scope) => covers(need.scope, scope), need.action)) return undefined;
    }
    const action = need?.action ?? `(no data action covers ${what}; management operations need the control plane)`;
    const scope = need?.scope ?? '/';
    return `Request blocked by Auth ${this.account} : Request is blocked because principal [${p.oid}] does not have required RBAC permissions to perform action [${action}] on resource [${scope}]. Learn more: https://aka.ms/cosmos-native-rbac.`;
  }
}
