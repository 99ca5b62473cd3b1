import { readFileSync } from 'node:fs';
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
