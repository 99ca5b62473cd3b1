import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { BrokerError } from '../errors';

/**
 * The PEM CA a local development endpoint's HTTPS is signed with (KEY_VAULT_CA_FILE, COSMOS_CA_FILE). Honoured only
 * for a loopback endpoint, so a production setting can never add a trust anchor for a real service.
 */

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export function isLoopbackUrl(u: string): boolean {
  return LOOPBACK.has(new URL(u).hostname.toLowerCase());
}

/** The CA's PEM, or undefined without a CA file; config_invalid when misused or unreadable. */
export function localEndpointCa(opts: {
  caFile: string | undefined;
  url: string;
  setting: string;
  service: string;
}): string | undefined {
  if (!opts.caFile) return undefined;
  if (!isLoopbackUrl(opts.url)) {
    throw new BrokerError('config_invalid', `${opts.service} is misconfigured.`, {
      cause: new Error(`${opts.setting} is only honoured for a loopback (local development) endpoint`),
    });
  }
  try {
    return readFileSync(opts.caFile, 'utf8');
  } catch (e) {
    throw new BrokerError('config_invalid', `${opts.service} is misconfigured (${opts.setting} cannot be read).`, { cause: e });
  }
}

const agents = new Map<string, Agent>();

/**
 * One keep-alive HTTPS agent per process for the HTTPS endpoints that trust `ca` (a local development CA; undefined:
 * the system's), shared by every client: no client opens a TLS session of its own, and a client made again (a key
 * rotation, a new app context) reuses the open connections. Idle sockets are closed after 30 s and never hold the
 * process open.
 */
export function sharedHttpsAgent(ca: string | undefined): Agent {
  const key = ca ?? '';
  let agent = agents.get(key);
  if (!agent) {
    agent = new Agent({ keepAlive: true, timeout: 30_000, minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
    agents.set(key, agent);
  }
  return agent;
}
