import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';

/**
 * The APIM policies (infra/apim/*.xml) parsed with a real XML parser, checked for what matters: the caller is
 * validated before anything uses it, the cache key comes only from validated claims and the target, the broker
 * is called with APIM's managed identity and a bounded timeout, cache durations derive from expires_in, errors
 * never carry context.LastError or the broker's text to the caller, and every named value is declared in Bicep.
 */

const root = join(__dirname, '..', '..');
const FILES = ['cloudsql-api.xml', 'cosmos-token-api.xml', 'cosmos-rbac-api.xml', 'query-api.xml'] as const;
const FRAGMENTS = ['broker-exchange', 'caller-errors'] as const;
const apimDir = join(root, 'infra', 'apim');
const fragmentXml = (id: string) => readFileSync(join(apimDir, 'fragments', `${id}.xml`), 'utf8');
const INCLUDE = /<include-fragment fragment-id="([a-z0-9-]+)"\s*\/>/g;
/** A policy as APIM runs it: every <include-fragment> replaced by the fragment's statements. */
const read = (f: string) =>
  readFileSync(join(apimDir, f), 'utf8').replace(INCLUDE, (_m, id: string) => {
    const body = fragmentXml(id).replace(/<!--[\s\S]*?-->/g, '');
    return body.slice(body.indexOf('<fragment>') + '<fragment>'.length, body.lastIndexOf('</fragment>'));
  });
const apimBicep = readFileSync(join(root, 'infra', 'modules', 'apim.bicep'), 'utf8');

interface Node {
  readonly tag: string;
  readonly attrs: Readonly<Record<string, string>>;
  /** Text directly inside the element. */
  readonly text: string;
  /** Ancestor tags, outermost first. */
  readonly path: readonly string[];
  /** Document order. */
  readonly order: number;
  readonly children: Node[];
}

type Raw = Record<string, unknown>;

function parse(xml: string): Node[] {
  const parser = new XMLParser({
    preserveOrder: true,
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
  });
  const all: Node[] = [];
  let order = 0;
  const walk = (items: Raw[], path: string[], into: Node[]) => {
    for (const item of items) {
      const tag = Object.keys(item).find((k) => k !== ':@');
      if (!tag || tag === '#text') continue;
      const kids = (item[tag] as Raw[]) ?? [];
      const node: Node = {
        tag,
        attrs: (item[':@'] as Record<string, string>) ?? {},
        text: kids
          .filter((k) => '#text' in k)
          .map((k) => String(k['#text']))
          .join(''),
        path,
        order: order++,
        children: [],
      };
      all.push(node);
      into.push(node);
      walk(kids, [...path, tag], node.children);
    }
  };
  walk(parser.parse(xml) as Raw[], [], []);
  return all;
}

const docs = Object.fromEntries(FILES.map((f) => [f, { xml: read(f), nodes: parse(read(f)) }])) as Record<
  (typeof FILES)[number],
  { xml: string; nodes: Node[] }
>;
const byTag = (nodes: Node[], tag: string) => nodes.filter((n) => n.tag === tag);
const one = (nodes: Node[], tag: string) => {
  const found = byTag(nodes, tag);
  expect(found).toHaveLength(1);
  return found[0]!;
};
const setVariable = (nodes: Node[], name: string) => nodes.find((n) => n.tag === 'set-variable' && n.attrs.name === name);
/** Every expression or literal that can end up in what the caller receives (bodies, headers, status lines). */
const callerFacing = (nodes: Node[]) =>
  nodes
    .filter((n) => n.path.includes('return-response') || (n.path.includes('outbound') && n.tag !== 'choose' && n.tag !== 'when'))
    .flatMap((n) => [
      n.text,
      ...Object.entries(n.attrs)
        .filter(([k]) => k !== 'condition')
        .map(([, v]) => v),
    ]);

describe.each(FILES)('%s', (file) => {
  const { xml, nodes } = docs[file];

  test('is well-formed XML with the four policy sections in order, each calling <base />', () => {
    expect(XMLValidator.validate(xml)).toBe(true);
    const top = nodes.filter((n) => n.path.length === 1).map((n) => n.tag);
    expect(top).toEqual(['inbound', 'backend', 'outbound', 'on-error']);
    for (const section of ['inbound', 'outbound', 'on-error']) {
      expect(nodes.find((n) => n.tag === 'base' && n.path.at(-1) === section)).toBeDefined();
    }
  });

  test('validates the caller (Entra ID, tenant and audience from named values, tid and oid required) before anything else uses it', () => {
    const jwt = one(nodes, 'validate-jwt');
    expect(jwt.path).toEqual(['policies', 'inbound']);
    expect(jwt.attrs['require-scheme']).toBe('Bearer');
    expect(jwt.attrs['output-token-variable-name']).toBe('caller-jwt');
    const openid = jwt.children.find((c) => c.tag === 'openid-config');
    expect(openid?.attrs.url).toBe('https://login.microsoftonline.com/{{entra-tenant-id}}/v2.0/.well-known/openid-configuration');
    const audiences = byTag(nodes, 'audience').map((a) => a.text);
    expect(audiences.length).toBeGreaterThan(0);
    for (const a of audiences) expect(a).toMatch(/^\{\{[a-z-]+-audience\}\}$/);
    const claims = byTag(nodes, 'claim').map((c) => c.attrs.name);
    expect(claims).toEqual(expect.arrayContaining(['tid', 'oid']));
    const firstUse = nodes.find(
      (n) =>
        n.order > 0 &&
        n.tag !== 'base' &&
        n.path.includes('inbound') &&
        !n.path.includes('validate-jwt') &&
        n.tag !== 'validate-jwt',
    );
    expect(firstUse!.order).toBeGreaterThan(jwt.order);
  });

  test("never sends context.LastError, the broker's error text or its raw body to the caller", () => {
    const out = callerFacing(nodes).join('\n');
    expect(out).not.toMatch(/LastError/);
    expect(out).not.toMatch(/error_description/);
    // on-error answers are fixed problem documents
    for (const body of nodes.filter((n) => n.path.includes('on-error') && n.tag === 'set-body')) {
      expect(body.text).toMatch(/application\/problem\+json|about:blank/);
      expect(body.text).not.toMatch(/LastError|Message|Reason/);
    }
    // LastError appears only in conditions, to pick the status
    const uses = nodes
      .flatMap((n) => [n.text, ...Object.entries(n.attrs).map(([k, v]) => `${k}=${v}`)])
      .filter((s) => s.includes('LastError'));
    for (const u of uses) expect(u).toMatch(/^condition=/);
  });
});

/**
 * The policy elements these files use, where APIM's policy reference allows each (section, or the only parent it may
 * have). A misspelt or misplaced element is well-formed XML but APIM refuses to save the policy.
 */
const ALL = ['inbound', 'backend', 'outbound', 'on-error'];
const PLACEMENT: Record<string, { sections?: string[]; parents?: string[] }> = {
  policies: { parents: [''] },
  inbound: { parents: ['policies'] },
  backend: { parents: ['policies'] },
  outbound: { parents: ['policies'] },
  'on-error': { parents: ['policies'] },
  base: { parents: ALL },
  'validate-jwt': { sections: ['inbound'] },
  'openid-config': { parents: ['validate-jwt'] },
  audiences: { parents: ['validate-jwt'] },
  audience: { parents: ['audiences'] },
  issuers: { parents: ['validate-jwt'] },
  issuer: { parents: ['issuers'] },
  'required-claims': { parents: ['validate-jwt'] },
  claim: { parents: ['required-claims'] },
  value: { parents: ['claim', 'set-header'] },
  'authentication-managed-identity': { sections: ['inbound'] },
  'set-backend-service': { sections: ['inbound', 'backend'] },
  'forward-request': { sections: ['backend'] },
  'cache-lookup-value': { sections: ALL },
  'cache-store-value': { sections: ALL },
  'send-request': { sections: ALL },
  'set-url': { parents: ['send-request'] },
  'set-method': { parents: ['send-request'] },
  'return-response': { sections: ALL },
  'set-status': { sections: ALL },
  'set-header': { sections: ALL },
  'set-body': { sections: ALL },
  'set-variable': { sections: ALL },
  choose: { sections: ALL },
  when: { parents: ['choose'] },
  otherwise: { parents: ['choose'] },
};

describe.each(FILES)('%s: every element is one APIM knows, where APIM allows it', (file) => {
  const { nodes } = docs[file];
  test('known elements, allowed parents and sections, each choose with a when and at most one otherwise (last)', () => {
    const problems: string[] = [];
    for (const n of nodes) {
      const rule = PLACEMENT[n.tag];
      if (!rule) {
        problems.push(`unknown element <${n.tag}>`);
        continue;
      }
      const parent = n.path.at(-1) ?? '';
      if (rule.parents && !rule.parents.includes(parent)) problems.push(`<${n.tag}> under <${parent}>`);
      if (rule.sections && !rule.sections.includes(n.path[1] ?? '')) problems.push(`<${n.tag}> in <${n.path[1]}>`);
      if (n.tag === 'choose') {
        const kids = n.children.map((c) => c.tag);
        if (!kids.includes('when') || kids.some((k) => k !== 'when' && k !== 'otherwise'))
          problems.push('choose without when, or with other children');
        if (kids.filter((k) => k === 'otherwise').length > 1 || (kids.includes('otherwise') && kids.at(-1) !== 'otherwise'))
          problems.push('otherwise not last/unique');
      }
      if (n.tag === 'when' && !/^@\(/.test(n.attrs.condition ?? '')) problems.push('when without an @( ) condition');
    }
    expect(problems).toEqual([]);
  });

  test('every policy expression is @(...) or @{...} and its braces/parentheses balance', () => {
    const exprs = nodes.flatMap((n) => [n.text, ...Object.values(n.attrs)]).filter((v) => v.startsWith('@'));
    expect(exprs.length).toBeGreaterThan(0);
    for (const e of exprs) {
      expect(e).toMatch(/^@(\([\s\S]*\)|\{[\s\S]*\})$/);
      // strip string literals (with escaped quotes) before counting
      const code = e.replace(/"(?:\\.|[^"\\])*"/g, '""');
      for (const [open, close] of [
        ['(', ')'],
        ['{', '}'],
        ['[', ']'],
      ] as const) {
        let depth = 0;
        for (const ch of code) {
          if (ch === open) depth++;
          if (ch === close) depth--;
          expect(depth).toBeGreaterThanOrEqual(0);
        }
        expect({ expr: e.slice(0, 60), open, depth }).toEqual({ expr: e.slice(0, 60), open, depth: 0 });
      }
    }
  });
});

describe.each(FILES)('%s: caller answers', (file) => {
  const { nodes } = docs[file];
  const answers = nodes.filter((n) => n.tag === 'return-response');
  const statusOf = (r: Node) => r.children.find((c) => c.tag === 'set-status')?.attrs.code ?? '';
  const header = (r: Node, name: string) => r.children.find((c) => c.tag === 'set-header' && c.attrs.name === name);

  test('Retry-After only on 503/504 answers (a retry cannot fix a 401, 403 or 502), and every 401 says Bearer', () => {
    expect(answers.length).toBeGreaterThan(0);
    for (const r of answers) {
      const code = statusOf(r);
      if (header(r, 'Retry-After')) expect(code).toMatch(/^(503|504|@\(context\.Response\.StatusCode == 504 \? 504 : 503\))$/);
      if (code === '401') expect(header(r, 'WWW-Authenticate')?.children[0]?.text).toMatch(/^Bearer /);
      if (code !== '200') expect(header(r, 'Content-Type')?.children[0]?.text).toBe('application/problem+json');
    }
  });

  test("the broker's body is parsed for a status decision only when it is JSON (a platform error page cannot turn a 503 into an exception)", () => {
    const decisions = nodes.filter(
      (n) => n.tag === 'set-variable' && ['caller-status', 'gateway-fault'].includes(n.attrs.name ?? ''),
    );
    for (const d of decisions) {
      const expr = d.attrs.value!;
      const guard = expr.indexOf('GetValueOrDefault("Content-Type", "").Contains("json")');
      expect(guard).toBeGreaterThan(-1);
      expect(expr.indexOf('Body.As<JObject>')).toBeGreaterThan(guard);
    }
  });
});

describe('query-api.xml: which broker errors reach the caller', () => {
  const { nodes } = docs['query-api.xml'];
  test('a broker 401 not about the caller, or a 403 about the gateway (party client, upstream_denied), becomes a fixed 502', () => {
    const fault = setVariable(nodes, 'gateway-fault')!.attrs.value!;
    expect(fault).toContain('if (s == 401) { return party != "subject"; }');
    expect(fault).toContain('party == "client" || code == "upstream_denied"');
    const when = nodes.find((n) => n.tag === 'when' && n.attrs.condition === '@((bool)context.Variables["gateway-fault"])')!;
    const status = when.children.find((c) => c.tag === 'return-response')!.children.find((c) => c.tag === 'set-status');
    expect(status?.attrs.code).toBe('502');
    expect(fault).not.toMatch(/LastError|detail|title/);
  });
});

describe.each(['cloudsql-api.xml', 'cosmos-token-api.xml', 'cosmos-rbac-api.xml'] as const)(
  '%s (token exchange with cache)',
  (file) => {
    const { nodes } = docs[file];

    test('the cache key comes only from validated claims (tid, oid) and the target', () => {
      const key = setVariable(nodes, 'broker-cache-key')!;
      expect(key).toBeDefined();
      const expr = key.attrs.value!;
      expect(expr).toContain('(Jwt)context.Variables["caller-jwt"]');
      expect(expr).toContain('Claims.GetValueOrDefault("tid"');
      expect(expr).toContain('Claims.GetValueOrDefault("oid"');
      expect(expr).toContain('(string)context.Variables["broker-resource"]');
      expect(expr).not.toMatch(/context\.Request|Headers|Authorization|AsJwt/);
      // the target comes from a named value, set before the exchange
      const resource = setVariable(nodes, 'broker-resource')!;
      expect(resource.attrs.value).toMatch(/^\{\{(cloudsql|cosmos|cosmos-rbac)-target\}\}$/);
      expect(resource.order).toBeLessThan(key.order);
      for (const c of [...byTag(nodes, 'cache-lookup-value'), ...byTag(nodes, 'cache-store-value')]) {
        expect(c.attrs.key).toBe('@((string)context.Variables["broker-cache-key"])');
      }
      const lookup = one(nodes, 'cache-lookup-value');
      expect(lookup.order).toBeGreaterThan(key.order);
    });

    test('a miss calls the broker: send-request mode new, bounded timeout, POST /api/token, APIM managed identity, RFC 8693 body', () => {
      const send = one(nodes, 'send-request');
      expect(send.attrs.mode).toBe('new');
      expect(Number(send.attrs.timeout)).toBeGreaterThan(0);
      expect(Number(send.attrs.timeout)).toBeLessThanOrEqual(30);
      expect(send.attrs['ignore-error']).toBe('true');
      expect(send.children.find((c) => c.tag === 'set-url')?.text).toBe('{{broker-base-url}}/api/token');
      expect(send.children.find((c) => c.tag === 'set-method')?.text).toBe('POST');
      const mi = send.children.find((c) => c.tag === 'authentication-managed-identity');
      expect(mi?.attrs.resource).toBe('{{broker-app-id-uri}}');
      const body = send.children.find((c) => c.tag === 'set-body')!.text;
      expect(body).toContain('urn:ietf:params:oauth:grant-type:token-exchange');
      expect(body).toContain('&subject_token=');
      expect(body).toContain('&resource=');
      expect(body).toContain('Uri.EscapeDataString(caller)');
      expect(body).toContain('Uri.EscapeDataString((string)context.Variables["broker-resource"])');
      // the broker is only called when the cache missed
      expect(send.path).toContain('when');
      const guard = nodes.find((n) => n.tag === 'when' && n.children.includes(send));
      expect(guard?.attrs.condition).toBe('@(!context.Variables.ContainsKey("broker-grant"))');
    });

    test('broker failures become clean problem answers: no answer 504, throttling 503 with a bounded Retry-After, else 401/403/502', () => {
      const returns = nodes.filter((n) => n.tag === 'return-response' && n.path.includes('inbound'));
      const statuses = returns.flatMap((r) => r.children.filter((c) => c.tag === 'set-status').map((c) => c.attrs.code));
      expect(statuses).toContain('504');
      const mapping = setVariable(nodes, 'caller-status')!.attrs.value!;
      expect(mapping).toMatch(/return 401/);
      expect(mapping).toMatch(/return 403/);
      expect(mapping).toMatch(/return 503/);
      expect(mapping).toMatch(/return 502/);
      expect(mapping).toContain('r.StatusCode == 401 && error == "invalid_grant"');
      const retryAfter = nodes
        .filter((n) => n.tag === 'set-header' && n.attrs.name === 'Retry-After')
        .flatMap((h) => h.children.map((c) => c.text));
      expect(retryAfter.some((v) => /seconds <= 300/.test(v))).toBe(true);
      // each mapped status has its own answer: 503 (Retry-After), 401 (Bearer), and 403/502 from the mapping
      const branches = nodes.filter((n) => n.tag === 'when' && /caller-status"\] == (503|401)\)$/.test(n.attrs.condition ?? ''));
      expect(branches).toHaveLength(2);
    });

    test('the cache duration derives from expires_in, minus a margin and jitter, never negative, stored only when positive', () => {
      const grant = setVariable(nodes, 'broker-grant')!.attrs.value!;
      expect(grant).toContain('(long)b["expires_in"]');
      expect(grant).toContain('b.Add("expires_at", expiresAt)');
      const seconds = setVariable(nodes, 'cache-seconds')!.attrs.value!;
      expect(seconds).toContain('g["expires_at"]');
      expect(seconds).toMatch(/Math\.Min\(max, Math\.Max\(0, left - margin - jitter\)\)/);
      expect(seconds).toContain('(int)context.Variables["broker-cache-max-seconds"]');
      // Bounded revocation (issue 13 item 9): a cached credential is served at most 60 s, whatever its lifetime.
      const max = setVariable(nodes, 'broker-cache-max-seconds')!.attrs.value!;
      expect(Number(/^@\((\d+)\)$/.exec(max)?.[1])).toBeGreaterThan(0);
      expect(Number(/^@\((\d+)\)$/.exec(max)?.[1])).toBeLessThanOrEqual(60);
      expect(seconds).toContain('new Random()');
      const margin = setVariable(nodes, 'broker-cache-margin-seconds')!.attrs.value!;
      expect(Number(/^@\((\d+)\)$/.exec(margin)?.[1])).toBeGreaterThanOrEqual(60);
      const store = one(nodes, 'cache-store-value');
      expect(store.attrs.duration).toBe('@((int)context.Variables["cache-seconds"])');
      const guard = nodes.find((n) => n.tag === 'when' && n.children.includes(store));
      expect(guard?.attrs.condition).toBe('@((int)context.Variables["cache-seconds"] > 0)');
    });
  },
);

describe('where the credential goes', () => {
  test("Cloud SQL: the backend gets the database token in a header, never the caller's token, and the header never flows back", () => {
    const { nodes } = docs['cloudsql-api.xml'];
    const inboundHeaders = nodes.filter((n) => n.tag === 'set-header' && n.path.at(-1) === 'inbound');
    expect(inboundHeaders.find((h) => h.attrs.name === 'X-Db-Token')?.children[0]?.text).toBe(
      '@((string)JObject.Parse((string)context.Variables["broker-grant"])["access_token"])',
    );
    expect(inboundHeaders.find((h) => h.attrs.name === 'Authorization')?.attrs['exists-action']).toBe('delete');
    expect(
      nodes.find((n) => n.tag === 'set-header' && n.path.includes('outbound') && n.attrs.name === 'X-Db-Token')?.attrs[
        'exists-action'
      ],
    ).toBe('delete');
  });

  test('Cosmos: the client gets the resource token and where to use it, with expires_in recomputed, and no-store', () => {
    const { nodes } = docs['cosmos-token-api.xml'];
    const final = nodes.filter((n) => n.tag === 'return-response' && n.path.at(-1) === 'inbound').at(-1)!;
    expect(final.children.find((c) => c.tag === 'set-status')?.attrs.code).toBe('200');
    expect(final.children.find((c) => c.tag === 'set-header' && c.attrs.name === 'Cache-Control')?.children[0]?.text).toBe(
      'no-store',
    );
    const body = final.children.find((c) => c.tag === 'set-body')!.text;
    for (const field of ['access_token', 'account_endpoint', 'database', 'container', 'partition_key', 'mode', 'expires_at'])
      expect(body).toContain(`g["${field}"]`);
    expect(body).toContain('"expires_in", expiresIn');
  });

  test("Cosmos keyless (rbac): the identity token stays in APIM; Cosmos REST gets type=aad, the partition is the caller's oid", () => {
    const { nodes, xml } = docs['cosmos-rbac-api.xml'];
    const inbound = nodes.filter((n) => n.tag === 'set-header' && n.path.at(-1) === 'inbound');
    const auth = inbound.find((h) => h.attrs.name === 'Authorization')!;
    expect(auth.attrs['exists-action']).toBe('override');
    expect(auth.children[0]?.text).toBe(
      '@(Uri.EscapeDataString("type=aad&ver=1.0&sig=" + (string)JObject.Parse((string)context.Variables["broker-grant"])["access_token"]))',
    );
    expect(auth.order).toBeGreaterThan(setVariable(nodes, 'broker-grant')!.order);
    const pk = inbound.find((h) => h.attrs.name === 'x-ms-documentdb-partitionkey')!;
    expect(pk.children[0]?.text).toContain('((Jwt)context.Variables["caller-jwt"]).Claims.GetValueOrDefault("oid"');
    expect(pk.children[0]?.text).not.toMatch(/context\.Request/);
    expect(inbound.find((h) => h.attrs.name === 'x-ms-version')?.children[0]?.text).toBe('2018-12-31');
    expect(one(nodes, 'set-backend-service').attrs['base-url']).toContain('g["account_endpoint"]');
    expect(Number(one(nodes, 'forward-request').attrs.timeout)).toBeLessThanOrEqual(30);
    // the token never reaches the caller: no answer, outbound header or body mentions it
    expect(callerFacing(nodes).join('\n')).not.toMatch(/access_token|broker-grant/);
    // Cosmos' error text (it names the identity) never reaches the caller either
    for (const r of nodes.filter((n) => n.tag === 'return-response' && n.path.includes('outbound'))) {
      expect(r.children.find((c) => c.tag === 'set-body')!.text).toMatch(/^@\("\{\\"type\\":\\"about:blank\\"/);
    }
    expect(xml).not.toMatch(/Response\.Body/);
  });

  test("Query: the caller's validated token is the subject, APIM's managed identity the client, the broker the backend", () => {
    const { nodes } = docs['query-api.xml'];
    const jwt = one(nodes, 'validate-jwt');
    const subject = nodes.find((n) => n.tag === 'set-header' && n.attrs.name === 'X-Subject-Token')!;
    expect(subject.order).toBeGreaterThan(jwt.order);
    expect(one(nodes, 'authentication-managed-identity').attrs.resource).toBe('{{broker-app-id-uri}}');
    expect(one(nodes, 'set-backend-service').attrs['base-url']).toBe('{{broker-base-url}}/api');
    expect(Number(one(nodes, 'forward-request').attrs.timeout)).toBeLessThanOrEqual(60);
  });
});

describe('named values and Bicep', () => {
  const declared = new Set([...apimBicep.matchAll(/^\s+'([a-z0-9-]+)': [a-zA-Z]+$/gm)].map((m) => m[1]!));

  test('every {{named-value}} a policy uses is declared in infra/modules/apim.bicep, and each declared one is used', () => {
    expect(declared.size).toBeGreaterThan(5);
    const used = new Set(
      [...FILES.map((f) => docs[f].xml), ...FRAGMENTS.map(fragmentXml)].flatMap((x) =>
        [...x.matchAll(/\{\{([a-z0-9-]+)\}\}/g)].map((m) => m[1]!),
      ),
    );
    expect([...used].filter((u) => !declared.has(u))).toEqual([]);
    expect([...declared].filter((d) => !used.has(d))).toEqual([]);
  });

  test('no named value is a secret and no policy holds an inline credential', () => {
    expect(apimBicep).toMatch(/secret: false/);
    for (const x of [...FILES.map((f) => docs[f].xml), ...FRAGMENTS.map(fragmentXml)]) {
      // `sig=` only as the literal prefix of an expression (type=aad&ver=1.0&sig=" + token), never with a value
      expect(x).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}|subscription-key|client_secret|AccountKey=|sig=(?!&quot;)/i);
    }
  });

  test('Bicep deploys each policy file as XML, and each fragment a policy includes before the policies that use it', () => {
    for (const f of FILES) expect(apimBicep).toContain(`loadTextContent('../apim/${f}')`);
    expect(apimBicep).not.toMatch(/format: 'rawxml'/);
    for (const id of FRAGMENTS) {
      expect(XMLValidator.validate(fragmentXml(id))).toBe(true);
      expect(apimBicep).toContain(`name: '${id}'`);
      expect(apimBicep).toContain(`loadTextContent('../apim/fragments/${id}.xml')`);
    }
    const included = new Set(
      FILES.flatMap((f) => [...readFileSync(join(apimDir, f), 'utf8').matchAll(INCLUDE)].map((m) => m[1]!)),
    );
    expect([...included].sort()).toEqual([...FRAGMENTS].sort());
    for (const [file, deps] of [
      ['cloudsql-api.xml', 'brokerExchange, callerErrors'],
      ['cosmos-token-api.xml', 'brokerExchange, callerErrors'],
      ['cosmos-rbac-api.xml', 'brokerExchange, callerErrors'],
      ['query-api.xml', 'callerErrors'],
    ] as const) {
      const at = apimBicep.indexOf(`loadTextContent('../apim/${file}')`);
      expect(apimBicep.slice(at, at + 200)).toContain(`dependsOn: [ values, ${deps} ]`);
    }
  });
});
