import type { Principal } from '../auth/principal';
import { BrokerError } from '../errors';
import { audit } from '../observability/audit';
import type { Logger } from '../observability/log';
import { evaluate, type DecisionGrant } from './evaluate';
import type { Policy } from './schema';
import type { Target } from './target';

/** What the caller is asking for, and on whose behalf: the inputs of one authorization decision. */
export interface AuthorizeRequest {
  readonly policy: Policy;
  readonly subject: Principal;
  readonly client: Principal;
  readonly target: Target;
  /** The audited action (`token.cloudsql`, `query`, `mcp.tools/call`, …). */
  readonly action: string;
  /** The audited target text (the resource URI, `query://NAME`). */
  readonly targetText: string;
  readonly log: Logger;
  /** A grant needed for another grant (a query's database identity): the rule of the first, on the audit line. */
  readonly onBehalfOfRule?: string;
  /** The refusal's message when not granted, when the target kind's default does not say it. */
  readonly deniedMessage?: string;
}

export interface Authorized<G extends DecisionGrant = DecisionGrant> {
  readonly grant: G;
  readonly ruleId: string;
}

const DENIED_MESSAGE: Record<Target['kind'], string> = {
  cloudsql: 'No policy rule grants this target to the subject.',
  cosmos: 'No policy rule grants this target to the subject.',
  query: 'No policy rule grants this query to the caller.',
};

/**
 * The one authorization step of every endpoint that hands out access (token exchange, query, MCP tools): evaluate
 * the policy (deny by default; the deny list wins), audit a refusal with what was asked, and throw the refusal's
 * BrokerError (403 `subject_denied` / `not_granted`). A grant is returned, not audited: the caller audits it once it
 * has issued what was granted (or audits the failure to issue it).
 */
export function authorizeTarget<K extends DecisionGrant['kind']>(
  req: AuthorizeRequest & { readonly target: Extract<Target, { kind: K }> },
): Authorized<Extract<DecisionGrant, { kind: K }>> {
  const decision = evaluate(req.policy, req.subject, req.target);
  if (decision.decision === 'deny' || decision.grant.kind !== req.target.kind) {
    const code = decision.decision === 'deny' ? decision.code : 'not_granted';
    audit(req.log, {
      decision: 'deny',
      action: req.action,
      subject: req.subject,
      client: req.client,
      target: req.targetText,
      reason: code,
      ...(req.onBehalfOfRule !== undefined ? { ruleId: req.onBehalfOfRule } : {}),
    });
    throw new BrokerError(
      code,
      code === 'subject_denied' ? 'The subject is denied.' : (req.deniedMessage ?? DENIED_MESSAGE[req.target.kind]),
    );
  }
  return { grant: decision.grant as Extract<DecisionGrant, { kind: K }>, ruleId: decision.ruleId };
}
