import type { Principal } from './principal';

/**
 * Who acted for the user: the client application of the token (`azp`, v2.0) and, when Entra issued it to an agent
 * identity, the Entra Agent ID claims. Reference: "Token claims reference for agent IDs",
 * https://learn.microsoft.com/en-us/entra/agent-id/identity-platform/agent-token-claims — `xms_act_fct` (actor facets)
 * and `xms_sub_fct` (subject facets) are space-separated odd integers in any order, `11` = AgentIdentity, `13` =
 * AgentIDUser; `xms_par_app_azp` is the parent application (the agent identity blueprint): "log the parent application
 * ID for auditing purposes", never authorize on it (it would grant every agent of the blueprint).
 */
export interface AgentInfo {
  /** The client application (`azp` / `appid`): the agent host, or the agent identity itself. */
  readonly appId?: string;
  /** The actor is an Entra agent identity (`xms_act_fct` contains 11). */
  readonly isAgentIdentity: boolean;
  /** `idtyp` (`user`: on behalf of a user; `app`: autonomous). */
  readonly idtyp?: string;
  readonly actorFacets?: string;
  readonly subjectFacets?: string;
  /** `xms_par_app_azp`: the agent identity blueprint. Audit only. */
  readonly blueprintAppId?: string;
}

const AGENT_IDENTITY_FACET = '11';

function facets(v: string | undefined): readonly string[] {
  return v === undefined ? [] : v.split(' ').filter(Boolean);
}

/** Whether the token's actor is an Entra agent identity. */
export function isAgentIdentity(p: Pick<Principal, 'claims'>): boolean {
  return facets(p.claims?.xms_act_fct).includes(AGENT_IDENTITY_FACET);
}

export function agentOf(p: Pick<Principal, 'appId' | 'claims'>): AgentInfo {
  const c = p.claims ?? {};
  return {
    appId: p.appId,
    isAgentIdentity: isAgentIdentity(p),
    ...(c.idtyp !== undefined ? { idtyp: c.idtyp } : {}),
    ...(c.xms_act_fct !== undefined ? { actorFacets: c.xms_act_fct } : {}),
    ...(c.xms_sub_fct !== undefined ? { subjectFacets: c.xms_sub_fct } : {}),
    ...(c.xms_par_app_azp !== undefined ? { blueprintAppId: c.xms_par_app_azp } : {}),
  };
}

/** The audit fields of the agent (flat, ids only): the client app and the Agent ID claims when present. */
export function agentAuditFields(p: Pick<Principal, 'appId' | 'claims'>): Record<string, string | boolean | undefined> {
  const a = agentOf(p);
  return {
    agentAppId: a.appId,
    agentIdentity: a.isAgentIdentity,
    agentIdtyp: a.idtyp,
    agentActorFacets: a.actorFacets,
    agentSubjectFacets: a.subjectFacets,
    agentBlueprintAppId: a.blueprintAppId,
  };
}
