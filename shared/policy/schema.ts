import { z } from 'zod';
import {
  COSMOS_ACCOUNT,
  COSMOS_ID,
  GUID,
  INSTANCE_CONNECTION_NAME,
  PG_DATABASE,
  QUERY_NAME,
  SERVICE_ACCOUNT_EMAIL,
} from '../lib/identifiers';

/**
 * The access policy: deny by default. A rule matches a subject (its tenant, plus every category it
 * lists: at least one role / scope / group / object id / app id of that category) and grants targets.
 * Rules are evaluated in file order; the first rule that matches the subject and grants the target wins.
 */

/** C0 and C1 control characters, DEL and the Unicode line/paragraph separators are refused in values. */
// eslint-disable-next-line no-control-regex
const NO_CONTROL_CHARACTERS = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]*$/;

const guid = z
  .string()
  .regex(GUID, 'must be a GUID')
  .transform((s) => s.toLowerCase());

const entraSubject = z
  .object({
    tenantId: guid,
    roles: z.array(z.string().min(1)).min(1).optional(),
    scopes: z.array(z.string().min(1)).min(1).optional(),
    groups: z.array(guid).min(1).optional(),
    objectIds: z.array(guid).min(1).optional(),
    appIds: z.array(guid).min(1).optional(),
    /**
     * true: only tokens of Entra agent identities match (`xms_act_fct` has 11); false: they never do (keep every agent
     * identity away from what the rule grants). Unset: either. Narrows only: the rule still needs another category.
     */
    agentIdentity: z.boolean().optional(),
  })
  .strict()
  .refine((s) => s.roles || s.scopes || s.groups || s.objectIds || s.appIds, {
    message: 'must list at least one of roles, scopes, groups, objectIds, appIds (a tenant alone grants nothing)',
  });

/** A SHA-256 thumbprint: 64 hex digits (colons allowed, as certificate tools print them), stored lower-case. */
const sha256 = z
  .string()
  .transform((s) => s.replace(/:/g, '').toLowerCase())
  .pipe(z.string().regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 thumbprint (64 hex digits)'));
const dn = z
  .string()
  .min(1)
  .max(1024)
  .regex(NO_CONTROL_CHARACTERS, 'must not contain control characters')
  .regex(/=/, 'must be a distinguished name such as "CN=partner-job, O=Contoso"');
const certValue = z.string().min(1).max(1024).regex(NO_CONTROL_CHARACTERS, 'must not contain control characters');

/**
 * A caller authenticated by a client certificate (docs/client-certificates.md): the issuing CA (one of
 * BROKER_CLIENT_CA_BUNDLE, by its SHA-256 thumbprint or its subject DN) plus at least one of: the certificate's
 * thumbprint, its subject DN, a DNS or URI subject alternative name.
 */
const certificateSubject = z
  .object({
    certificate: z
      .object({
        issuerThumbprint: sha256.optional(),
        issuer: dn.optional(),
        thumbprints: z.array(sha256).min(1).optional(),
        subjects: z.array(dn).min(1).optional(),
        dnsNames: z
          .array(certValue.transform((d) => d.toLowerCase()))
          .min(1)
          .optional(),
        uris: z.array(certValue).min(1).optional(),
      })
      .strict()
      .superRefine((c, ctx) => {
        if ((c.issuer === undefined) === (c.issuerThumbprint === undefined))
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            message: 'must name the issuing CA by exactly one of issuer (its subject DN) and issuerThumbprint',
          });
        if (!c.thumbprints && !c.subjects && !c.dnsNames && !c.uris)
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            message: 'must list at least one of thumbprints, subjects, dnsNames, uris (a CA alone grants nothing)',
          });
      }),
  })
  .strict();

/**
 * A rule's subject: Entra ID callers ({tenantId, roles, …}) or certificate callers ({certificate: {…}}). Dispatched
 * on the `certificate` key, so each form reports its own errors (a union would report both).
 */
const subject = z.unknown().transform((v, ctx) => {
  const schema = v !== null && typeof v === 'object' && 'certificate' in v ? certificateSubject : entraSubject;
  const r = schema.safeParse(v);
  if (!r.success) {
    for (const issue of r.error.issues) ctx.addIssue(issue);
    return z.NEVER;
  }
  return r.data;
});

const serviceAccountEmail = z
  .string()
  .regex(SERVICE_ACCOUNT_EMAIL, 'must be a service account email (…@PROJECT.iam.gserviceaccount.com)');

/**
 * Who logs in to the database (docs/cloudsql.md, "Two identity modes"):
 * - `serviceAccount` (default): the rule's `serviceAccount`; the caller is carried as transaction settings only;
 * - `caller`: the caller as themself (Entra on-behalf-of → Google STS workforce pool → Cloud SQL IAM login of their
 *   workforce principal). `adminServiceAccount` only reads the instance's connect settings (SQL Admin API: address,
 *   server CA) and whether a refused caller is a database user; it never logs in.
 */
const cloudsqlGrant = z
  .object({
    instance: z.string().regex(INSTANCE_CONNECTION_NAME, 'must be an instance connection name PROJECT:REGION:INSTANCE'),
    databases: z.array(z.string().regex(PG_DATABASE, 'must be a PostgreSQL database name')).min(1),
    identity: z.enum(['serviceAccount', 'caller']).default('serviceAccount'),
    serviceAccount: serviceAccountEmail.optional(),
    adminServiceAccount: serviceAccountEmail.optional(),
    maxTtlSeconds: z.number().int().min(60).max(3600),
  })
  .strict()
  .superRefine((g, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
    if (g.identity === 'serviceAccount') {
      if (g.serviceAccount === undefined) issue('serviceAccount', 'required (the identity that logs in to the database)');
      if (g.adminServiceAccount !== undefined) issue('adminServiceAccount', 'only for identity "caller"');
    } else {
      if (g.serviceAccount !== undefined)
        issue(
          'serviceAccount',
          'not for identity "caller": the caller logs in as themself (name adminServiceAccount for the SQL Admin API)',
        );
      if (g.adminServiceAccount === undefined)
        issue(
          'adminServiceAccount',
          'required for identity "caller": the service account that reads the connect settings (never logs in)',
        );
    }
  });

const partitionKey = z.discriminatedUnion('type', [
  z.object({ type: z.literal('none') }).strict(),
  z
    .object({
      type: z.literal('fixed'),
      value: z.string().min(1).max(2048).regex(NO_CONTROL_CHARACTERS, 'must not contain control characters'),
    })
    .strict(),
  z.object({ type: z.literal('claim'), claim: z.enum(['oid', 'tid', 'appid']) }).strict(),
]);

/** A top-level item property an MCP query tool may filter on by equality (a plain name: it is written into the query). */
const COSMOS_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * How the grant's container is offered as MCP read tools (docs/mcp.md). Tools only ever read the caller's own
 * partition: the grant's own partitionKey binds it (claim or fixed), else `partitionKey` here (for auth "rbac" and
 * resource-token grants of the whole container); a grant that binds none has no tools.
 */
const cosmosMcp = z
  .object({
    /** false: no tools for this container. */
    expose: z.boolean().optional(),
    partitionKey: z
      .discriminatedUnion('type', [
        z
          .object({
            type: z.literal('fixed'),
            value: z.string().min(1).max(2048).regex(NO_CONTROL_CHARACTERS, 'must not contain control characters'),
          })
          .strict(),
        z.object({ type: z.literal('claim'), claim: z.enum(['oid', 'tid', 'appid']) }).strict(),
      ])
      .optional(),
    /** Item properties the query tool offers as optional equality filters (none: no filters). */
    fields: z.array(z.string().regex(COSMOS_FIELD, 'must be a property name (letters, digits, _)')).max(16).optional(),
    /** The most items one query returns (capped by MCP_COSMOS_MAX_ITEMS). */
    maxItems: z.number().int().min(1).max(1000).optional(),
  })
  .strict();

const cosmosGrant = z
  .object({
    account: z.string().regex(COSMOS_ACCOUNT, 'must be a CosmosDB account name'),
    database: z.string().regex(COSMOS_ID, 'must be a Cosmos id'),
    container: z.string().regex(COSMOS_ID, 'must be a Cosmos id'),
    mode: z.enum(['read', 'all']),
    /**
     * `resourceToken` (default): a Cosmos resource token minted with the account key (partition-scoped or not).
     * `rbac`: an Entra access token of the user-assigned managed identity `identityClientId` (declared in
     * COSMOS_RBAC_IDENTITY_CLIENT_IDS), whose data-plane role assignment is scoped to this container; no key is read.
     */
    auth: z.enum(['resourceToken', 'rbac']).default('resourceToken'),
    identityClientId: guid.optional(),
    partitionKey: partitionKey.optional(),
    // Cosmos resource tokens live 10 s to 18,000 s (see shared/cosmos/provider.ts for the references). Not for rbac:
    // an Entra token lives as long as Entra says and cannot be shortened.
    maxTtlSeconds: z.number().int().min(10).max(18000).optional(),
    mcp: cosmosMcp.optional(),
  })
  .strict()
  .superRefine((g, ctx) => {
    const own = g.partitionKey !== undefined && g.partitionKey.type !== 'none';
    if (own && g.mcp?.partitionKey !== undefined)
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['mcp', 'partitionKey'],
        message: "the grant's own partitionKey binds the MCP tools' partition; mcp.partitionKey is for grants without one",
      });
    if (g.auth === 'rbac') {
      if (g.partitionKey !== undefined) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['partitionKey'],
          message:
            'partition scoping is not possible with auth "rbac" (role assignments stop at the container); use auth "resourceToken"',
        });
      }
      if (g.identityClientId === undefined) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['identityClientId'],
          message:
            'auth "rbac" needs the client id of the user-assigned managed identity whose role assignment grants this container',
        });
      }
      if (g.maxTtlSeconds !== undefined) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['maxTtlSeconds'],
          message: 'not for auth "rbac": the Entra token lives as long as Entra issues it and cannot be shortened',
        });
      }
    } else {
      if (g.partitionKey === undefined)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['partitionKey'],
          message: 'required for auth "resourceToken" ({"type":"none"} for the whole container)',
        });
      if (g.identityClientId !== undefined)
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['identityClientId'], message: 'only for auth "rbac"' });
      if (g.maxTtlSeconds === undefined)
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['maxTtlSeconds'], message: 'required for auth "resourceToken"' });
    }
  });

const rule = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 letters, digits, . _ -'),
    description: z.string().max(500).optional(),
    subject,
    grants: z
      .object({
        cloudsql: z.array(cloudsqlGrant).default([]),
        cosmos: z.array(cosmosGrant).default([]),
        queries: z.array(z.string().regex(QUERY_NAME, 'must be a query name')).default([]),
      })
      .strict(),
    /** Catalog column masks this rule's grants lift (`QUERY.COLUMN`, or `QUERY.*` for all of a query's masks). */
    maskExemptions: z
      .array(z.string().regex(/^[a-z][a-z0-9-]{0,63}\.(\*|[A-Za-z_][A-Za-z0-9_]{0,62})$/, 'must be QUERY.COLUMN or QUERY.*'))
      .default([]),
  })
  .strict();

export const DENY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const isoTime = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/, 'must be an ISO 8601 UTC time, e.g. 2026-01-02T03:04:05Z')
  .refine((t) => !Number.isNaN(Date.parse(t)), 'must be a valid time');

/** A deny entry wins over every rule on every endpoint, until `expiresAt` (when given). */
const deny = z
  .object({
    id: z.string().regex(DENY_ID, 'must be 1-64 letters, digits, . _ -').optional(),
    tenantId: guid,
    objectId: guid,
    reason: z.string().max(500).optional(),
    expiresAt: isoTime.optional(),
    createdAt: isoTime.optional(),
    createdBy: z.string().max(200).optional(),
  })
  .strict();

/**
 * A revoked client certificate: refused on every endpoint, until `expiresAt` (when given). Names the certificate by its
 * SHA-256 thumbprint, or by its serial number (optionally with the issuing CA's thumbprint: serials are unique per CA).
 */
const denyCertificate = z
  .object({
    id: z.string().regex(DENY_ID, 'must be 1-64 letters, digits, . _ -').optional(),
    thumbprint: sha256.optional(),
    serialNumber: z
      .string()
      .transform((s) =>
        s
          .replace(/:/g, '')
          .toLowerCase()
          .replace(/^0+(?=.)/, ''),
      )
      .pipe(z.string().regex(/^[0-9a-f]{1,40}$/, 'must be a certificate serial number in hex'))
      .optional(),
    issuerThumbprint: sha256.optional(),
    reason: z.string().max(500).optional(),
    expiresAt: isoTime.optional(),
    createdAt: isoTime.optional(),
    createdBy: z.string().max(200).optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    if ((d.thumbprint === undefined) === (d.serialNumber === undefined))
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must name exactly one of thumbprint and serialNumber' });
    if (d.issuerThumbprint !== undefined && d.serialNumber === undefined)
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['issuerThumbprint'], message: 'only with serialNumber' });
  });

export const policySchema = z
  .object({
    $schema: z.string().optional(),
    version: z.literal(1),
    deny: z.array(deny).default([]),
    denyCertificates: z.array(denyCertificate).default([]),
    rules: z.array(rule),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.rules.forEach((r, i) => {
      if (seen.has(r.id))
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['rules', i, 'id'], message: `duplicate rule id "${r.id}"` });
      seen.add(r.id);
    });
    const denyIds = new Set<string>();
    const denyEntries: [string, { id?: string }[]][] = [
      ['deny', p.deny],
      ['denyCertificates', p.denyCertificates],
    ];
    for (const [key, entries] of denyEntries)
      entries.forEach((d, i) => {
        if (d.id === undefined) return;
        if (denyIds.has(d.id))
          ctx.addIssue({ code: z.ZodIssueCode.custom, path: [key, i, 'id'], message: `duplicate deny id "${d.id}"` });
        denyIds.add(d.id);
      });
  });

export type Policy = z.output<typeof policySchema>;
export type Rule = Policy['rules'][number];
export type DenyEntry = Policy['deny'][number];
export type CertificateDenyEntry = Policy['denyCertificates'][number];
export type EntraSubject = z.output<typeof entraSubject>;
export type CertificateSubject = z.output<typeof certificateSubject>;
export type CloudSqlGrant = Rule['grants']['cloudsql'][number];
export type CosmosGrant = Rule['grants']['cosmos'][number];
export type PartitionKeySpec = NonNullable<CosmosGrant['partitionKey']>;
export type CosmosMcpSpec = NonNullable<CosmosGrant['mcp']>;
