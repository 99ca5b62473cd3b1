import { readFileSync, statSync } from 'node:fs';
import { BrokerError } from '../errors';
import { parseJsonDocument } from '../json-schema-doc';
import { policySchema, type Policy } from './schema';

export class PolicyError extends Error {
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`Invalid policy ${source}: ${problems.join('; ')}`);
    this.name = 'PolicyError';
  }
}

/** Parse and schema-check a policy document; errors name the path of each bad entry. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  const r = parseJsonDocument(text, policySchema);
  if ('problems' in r) throw new PolicyError(source, r.problems);
  return r.data;
}

const CHECK_INTERVAL_MS = 5000;
let cache: { path: string; mtimeMs: number; checkedAt: number; policy: Policy } | undefined;

/**
 * The policy at `path`, parsed once and re-read when the file changes (checked at most every 5 s).
 * A missing or invalid file is a configuration error (503 naming the problem), never a 500.
 */
export function loadPolicyFile(path: string, now = Date.now()): Policy {
  if (cache && cache.path === path && now - cache.checkedAt < CHECK_INTERVAL_MS) return cache.policy;
  let mtimeMs: number;
  try {
    mtimeMs = statSync(path).mtimeMs;
  } catch (e) {
    throw new BrokerError('config_invalid', `The policy file BROKER_POLICY_PATH=${path} cannot be read.`, { cause: e });
  }
  if (cache && cache.path === path && cache.mtimeMs === mtimeMs) {
    cache.checkedAt = now;
    return cache.policy;
  }
  try {
    const policy = parsePolicy(readFileSync(path, 'utf8'), path);
    cache = { path, mtimeMs, checkedAt: now, policy };
    return policy;
  } catch (e) {
    const msg = e instanceof PolicyError ? e.message : `The policy file ${path} cannot be read.`;
    throw new BrokerError('config_invalid', msg, { cause: e });
  }
}
