import { BrokerError } from '../errors';
import type { Principal } from '../auth/principal';
import type { CallerParamSpec, CatalogQuery, ValueParamSpec } from './catalog';

/**
 * Bind a request's JSON parameters to a catalog query's typed parameter list. Everything is checked
 * here, so PostgreSQL only ever receives well-formed values as bind parameters ($1..$n), never SQL:
 * every failure is a 400 naming the parameter.
 */

export type BoundValue = string | null;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const INTEGER = /^-?(0|[1-9]\d{0,15})$/;

function bad(name: string, why: string): BrokerError {
  return new BrokerError('invalid_parameter', `Parameter "${name}" ${why}.`, { detail: { parameter: name } });
}

function validDate(s: string): boolean {
  const m = DATE.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return (
    d.getUTCFullYear() === Number(m[1]) &&
    d.getUTCMonth() === Number(m[2]) - 1 &&
    d.getUTCDate() === Number(m[3]) &&
    Number(m[1]) >= 1
  );
}

const patterns = new Map<string, RegExp>();
function fullMatch(pattern: string, value: string): boolean {
  let re = patterns.get(pattern);
  if (!re) {
    re = new RegExp(`^(?:${pattern})$`, 'u');
    patterns.set(pattern, re);
  }
  return re.test(value);
}

function bindOne(p: ValueParamSpec, v: unknown): BoundValue {
  switch (p.type) {
    case 'string': {
      if (typeof v !== 'string') throw bad(p.name, 'must be a string');
      if (LONE_SURROGATE.test(v)) throw bad(p.name, 'must be well-formed Unicode');
      if (v.includes('\0')) throw bad(p.name, 'must not contain NUL characters');
      const len = [...v].length;
      if (len < p.minLength || len > p.maxLength) throw bad(p.name, `must be ${p.minLength} to ${p.maxLength} characters long`);
      if (p.enum && !p.enum.includes(v)) throw bad(p.name, `must be one of ${p.enum.join(', ')}`);
      if (p.pattern && !fullMatch(p.pattern, v)) throw bad(p.name, 'does not match the required pattern');
      return v;
    }
    case 'integer': {
      let n: number;
      if (typeof v === 'number' && Number.isSafeInteger(v)) n = v;
      else if (typeof v === 'string' && INTEGER.test(v) && Number.isSafeInteger(Number(v))) n = Number(v);
      else throw bad(p.name, 'must be an integer');
      if (n < p.min || n > p.max) throw bad(p.name, `must be between ${p.min} and ${p.max}`);
      return String(n);
    }
    case 'number': {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(p.name, 'must be a finite number');
      if ((p.min !== undefined && v < p.min) || (p.max !== undefined && v > p.max)) {
        throw bad(p.name, `must be between ${p.min ?? '-∞'} and ${p.max ?? '∞'}`);
      }
      return String(v);
    }
    case 'boolean':
      if (typeof v !== 'boolean') throw bad(p.name, 'must be true or false');
      return v ? 'true' : 'false';
    case 'date':
      if (typeof v !== 'string' || !validDate(v)) throw bad(p.name, 'must be a date YYYY-MM-DD');
      if ((p.min && v < p.min) || (p.max && v > p.max)) throw bad(p.name, `must be between ${p.min ?? '…'} and ${p.max ?? '…'}`);
      return v;
    case 'timestamp':
      if (typeof v !== 'string' || !TIMESTAMP.test(v) || !validDate(v.slice(0, 10)) || Number.isNaN(Date.parse(v))) {
        throw bad(p.name, 'must be an RFC 3339 timestamp with a time zone');
      }
      return v;
    case 'uuid':
      if (typeof v !== 'string' || !UUID.test(v)) throw bad(p.name, 'must be a UUID');
      return v.toLowerCase();
  }
}

/** What an identity-bound parameter can read: the validated caller. */
export type CallerIdentity = Pick<Principal, 'tenantId' | 'objectId' | 'appId' | 'claims' | 'kind' | 'certificate'>;

function fromCaller(query: CatalogQuery, p: CallerParamSpec, caller: CallerIdentity | undefined): BoundValue {
  let v: string | undefined;
  if (caller?.kind === 'certificate') {
    // A certificate caller has no Entra ids or token claims: only the certificate sources bind.
    if (p.from === 'caller.certThumbprint') v = caller.certificate?.thumbprint;
    else if (p.from === 'caller.certSubject') v = caller.certificate?.subject;
  } else if (caller) {
    if (p.from === 'caller.oid') v = caller.objectId;
    else if (p.from === 'caller.tid') v = caller.tenantId;
    else if (p.from === 'caller.appId') v = caller.appId;
    else if (p.claim !== undefined && caller.claims && Object.prototype.hasOwnProperty.call(caller.claims, p.claim))
      v = caller.claims[p.claim];
  }
  if (v === undefined || v === '') {
    if (p.required) {
      const what = p.from === 'claim' ? `claim "${p.claim ?? ''}"` : p.from;
      throw new BrokerError(
        'not_granted',
        `Query ${query.name} binds "${p.name}" to the caller's ${what}, which the caller's token does not carry.`,
      );
    }
    return null;
  }
  if (v.includes('\0') || LONE_SURROGATE.test(v) || v.length > 1024)
    throw new BrokerError('not_granted', `The caller's value for "${p.name}" cannot be bound.`);
  return v;
}

/**
 * The bind values ($1..$n) for `query` from the request body object and the validated caller. An
 * identity-bound parameter (`from`) takes its value from the caller only: sending it in the body is a 400
 * naming it, whatever the value (null included).
 */
export function bindParameters(query: CatalogQuery, body: Record<string, unknown>, caller?: CallerIdentity): BoundValue[] {
  const known = new Set(query.parameters.map((p) => p.name));
  for (const k of Object.keys(body)) {
    if (!known.has(k)) {
      const shown =
        k.length > 64 || !/^[\x20-\x7e]*$/.test(k)
          ? `${[...k]
              .slice(0, 32)
              .join('')
              .replace(/[^\x20-\x7e]/g, '?')}…`
          : k;
      throw new BrokerError('invalid_parameter', `Parameter "${shown}" is not a parameter of query ${query.name}.`, {
        detail: { parameter: shown },
      });
    }
  }
  for (const p of query.parameters) {
    if (p.type === 'caller' && Object.prototype.hasOwnProperty.call(body, p.name)) {
      throw new BrokerError('invalid_parameter', `Parameter "${p.name}" is bound to the caller's identity and cannot be sent.`, {
        detail: { parameter: p.name },
      });
    }
  }
  return query.parameters.map((p) => {
    if (p.type === 'caller') return fromCaller(query, p, caller);
    const v = Object.prototype.hasOwnProperty.call(body, p.name) ? body[p.name] : undefined;
    if (v === undefined || v === null) {
      if (p.required) throw bad(p.name, 'is required');
      return null;
    }
    return bindOne(p, v);
  });
}

/** For the audit event: the body parameters given (names only) and the identity-bound ones. */
export function parameterNames(query: CatalogQuery, body: Record<string, unknown>): { given: string[]; identityBound: string[] } {
  return {
    given: query.parameters
      .filter((p) => p.type !== 'caller' && body[p.name] !== undefined && body[p.name] !== null)
      .map((p) => p.name),
    identityBound: query.parameters.filter((p) => p.type === 'caller').map((p) => p.name),
  };
}
