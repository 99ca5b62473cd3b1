import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import type { Result } from './invoke';

/**
 * Validates real responses against openapi.yaml with Ajv (JSON Schema 2020-12, the dialect of OpenAPI
 * 3.1): the operation is found by path + method, the response by status (an undocumented status is a
 * failure), then the media type, every documented header (required ones must be present) and the body.
 */

export const SPEC_PATH = resolve(__dirname, '..', '..', 'openapi.yaml');
const SPEC_ID = 'https://token-broker.invalid/openapi.yaml';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export function loadSpec(): JsonObject {
  return parse(readFileSync(SPEC_PATH, 'utf8')) as JsonObject;
}

/** `#/a/b~1c` → the value at that JSON pointer (undefined if absent). */
export function atPointer(doc: Json, pointer: string): Json | undefined {
  if (!pointer.startsWith('#')) return undefined;
  let cur: Json | undefined = doc;
  for (const raw of pointer.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = Array.isArray(cur) ? cur[Number(key)] : cur[key];
    if (cur === undefined) return undefined;
  }
  return cur;
}

export const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** Every `$ref` string in the document, with where it is. */
export function allRefs(doc: Json, at = '#'): { at: string; ref: string }[] {
  if (doc === null || typeof doc !== 'object') return [];
  if (Array.isArray(doc)) return doc.flatMap((v, i) => allRefs(v, `${at}/${i}`));
  const out: { at: string; ref: string }[] = [];
  for (const [k, v] of Object.entries(doc)) {
    if (k === '$ref' && typeof v === 'string') out.push({ at, ref: v });
    else out.push(...allRefs(v, `${at}/${escapePointer(k)}`));
  }
  return out;
}

/** Strict Ajv, except that `required` may name properties declared in a sibling `allOf` branch (the per-status overlays do). */
export function newAjv(): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allErrors: true });
  addFormats(ajv);
  // The OpenAPI document's own (non-schema) members, and OpenAPI's schema annotations.
  ajv.addVocabulary([
    'openapi',
    'info',
    'servers',
    'paths',
    'components',
    'tags',
    'security',
    'jsonSchemaDialect',
    'webhooks',
    'externalDocs',
    'example',
    'discriminator',
    'xml',
  ]);
  return ajv;
}

export interface Checked {
  readonly operationId: string;
  readonly status: number;
}

export class ContractValidator {
  readonly spec: JsonObject;
  private readonly ajv = newAjv();
  private readonly compiled = new Map<string, ValidateFunction>();
  /** Every (operation, status) a real response was validated for. */
  readonly checked: Checked[] = [];

  constructor(spec: JsonObject = loadSpec()) {
    this.spec = spec;
    this.ajv.addSchema(spec, SPEC_ID);
  }

  /** A validator for the schema at a JSON pointer of the spec. */
  schemaAt(pointer: string): ValidateFunction {
    let v = this.compiled.get(pointer);
    if (!v) {
      v = this.ajv.compile({ $ref: `${SPEC_ID}${pointer}` });
      this.compiled.set(pointer, v);
    }
    return v;
  }

  /** Follow a `$ref` (if any) of the object at `pointer`; returns the object and its own pointer. */
  private deref(pointer: string): { node: JsonObject; pointer: string } {
    let p = pointer;
    for (let i = 0; i < 5; i++) {
      const node = atPointer(this.spec, p) as JsonObject | undefined;
      if (!node) throw new Error(`openapi.yaml: nothing at ${p}`);
      if (typeof node.$ref !== 'string') return { node, pointer: p };
      p = node.$ref;
    }
    throw new Error(`openapi.yaml: $ref chain too long at ${pointer}`);
  }

  /** Problems of a request body the handler accepted (the documented request shape must admit it). */
  checkRequest(path: string, method: string, contentType: string, body: unknown): string[] {
    const opPointer = `#/paths/${escapePointer(path)}/${method.toLowerCase()}`;
    const where = `${method.toUpperCase()} ${path} request`;
    const op = atPointer(this.spec, opPointer) as JsonObject | undefined;
    if (!op) return [`no operation ${method.toUpperCase()} ${path} in openapi.yaml`];
    if (!op.requestBody) return [`${where}: a body was accepted but none is documented`];
    const { node: rb, pointer } = this.deref(`${opPointer}/requestBody`);
    const media = Object.keys((rb.content ?? {}) as JsonObject).find((m) => m.toLowerCase() === contentType.toLowerCase());
    if (!media) return [`${where}: content-type ${contentType} was accepted but is not documented`];
    const v = this.schemaAt(`${pointer}/content/${escapePointer(media)}/schema`);
    return v(body) ? [] : [`${where}: ${this.ajv.errorsText(v.errors, { separator: '; ' })}`];
  }

  /** Problems of a real response (empty when it conforms). */
  check(path: string, method: string, res: Result): string[] {
    const opPointer = `#/paths/${escapePointer(path)}/${method.toLowerCase()}`;
    const op = atPointer(this.spec, opPointer) as JsonObject | undefined;
    if (!op) return [`no operation ${method.toUpperCase()} ${path} in openapi.yaml`];
    const responses = op.responses as JsonObject;
    const key = [String(res.status), `${String(res.status)[0]}XX`, 'default'].find((k) => k in responses);
    if (!key)
      return [`${method.toUpperCase()} ${path}: status ${res.status} is not documented (body: ${res.text.slice(0, 200)})`];
    this.checked.push({ operationId: op.operationId as string, status: res.status });
    const { node: response, pointer: rp } = this.deref(`${opPointer}/responses/${key}`);
    const problems: string[] = [];
    const where = `${method.toUpperCase()} ${path} ${res.status}`;

    for (const [name, h] of Object.entries((response.headers ?? {}) as JsonObject)) {
      const { node: header, pointer: hp } = this.deref(`${rp}/headers/${escapePointer(name)}`);
      void h;
      const value = res.headers.get(name);
      if (value === null) {
        if (header.required === true) problems.push(`${where}: required header ${name} is missing`);
        continue;
      }
      const v = this.schemaAt(`${hp}/schema`);
      if (!v(value)) problems.push(`${where}: header ${name}: "${String(value)}" ${this.ajv.errorsText(v.errors)}`);
    }

    const content = response.content as JsonObject | undefined;
    if (!content) {
      if (res.text.length > 0) problems.push(`${where}: a body is sent but none is documented`);
      return problems;
    }
    const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const media = Object.keys(content).find((m) => m.toLowerCase() === type);
    if (!media) return [...problems, `${where}: content-type "${type}" is not documented (${Object.keys(content).join(', ')})`];
    let body: unknown;
    try {
      body = JSON.parse(res.text);
    } catch {
      return [...problems, `${where}: the body is not JSON`];
    }
    const v = this.schemaAt(`${rp}/content/${escapePointer(media)}/schema`);
    if (!v(body))
      problems.push(`${where}: body ${this.ajv.errorsText(v.errors, { separator: '; ' })}: ${res.text.slice(0, 300)}`);
    return problems;
  }
}
