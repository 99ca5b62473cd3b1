import { HttpRequest } from '@azure/functions';
import { MAX_JSON_DEPTH, parseStrictJson, StrictJsonError } from '../../../shared/http/strict-json';
import { parseJsonBody, queryParam, readJsonObject, readParams } from '../../../shared/http/request';

function failure(text: string) {
  try {
    parseStrictJson(text);
  } catch (e) {
    if (e instanceof StrictJsonError) return e.failure;
    throw e;
  }
  return undefined;
}

describe('the one strict JSON parser', () => {
  test.each([
    ['{"a":1,"a":2}', 'a'],
    ['{"a":1,"\\u0061":2}', 'a'],
    ['{"x":{"b":1,"b":2}}', 'x.b'],
    ['{"x":[{"c":1},{"c":1,"c":2}]}', 'x[].c'],
    ['[{"k":"v","k":"w"}]', '[].k'],
    ['{"a":"{\\"a\\":1}","a":1}', 'a'],
    ['{"__proto__":{},"__proto__":{}}', '__proto__'],
    ['{ "s" : 1 , "s" : 1 }', 's'],
    ['{"a\\\\":1,"a\\\\":2}', 'a\\'],
    ['{"x\\\\\\"y":1,"x\\\\\\"y":2}', 'x\\"y'],
  ])('%s: duplicate %s', (text, path) => {
    expect(failure(text)).toEqual({ kind: 'duplicate', path });
  });

  test.each([
    '{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}',
    '{"a":"\\"a\\":1, \\"a\\":2"}',
    '{"a\\"":1,"a":2}',
    '[1,2,"x",{"a":[]},{"a":{}}]',
    '"just a string"',
  ])('%s: no duplicate', (text) => {
    expect(failure(text)).toBeUndefined();
    expect(parseStrictJson(text)).toEqual(JSON.parse(text));
  });

  test('syntax errors and excessive nesting are refused', () => {
    expect(failure('{"a":1,}')).toEqual({ kind: 'syntax' });
    expect(failure("{'a':1}")).toEqual({ kind: 'syntax' });
    expect(failure('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH))).toBeUndefined();
    expect(failure('['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1))).toEqual({ kind: 'too_deep' });
    expect(failure('['.repeat(200_000))).toEqual({ kind: 'syntax' });
  });

  test('a duplicate becomes 400 bad_request naming the parameter', () => {
    expect(() => parseJsonBody('{"resource":"a","resource":"b"}')).toThrow(
      expect.objectContaining({ code: 'bad_request', detail: { parameter: 'resource' } }),
    );
  });

  const json = (text: string) =>
    new HttpRequest({
      method: 'POST',
      url: 'http://h/api/x',
      headers: { 'content-type': 'application/json' },
      body: { string: text },
    });
  test('every body reader uses it: readParams (token, explain, admin) and readJsonObject (query)', async () => {
    await expect(readParams(json('{"resource":"cosmos://a/b/c","resource":"cloudsql://x"}'))).rejects.toMatchObject({
      code: 'bad_request',
      detail: { parameter: 'resource' },
    });
    await expect(readJsonObject(json('{"customerId":1,"customerId":2}'))).rejects.toMatchObject({
      code: 'bad_request',
      detail: { parameter: 'customerId' },
    });
    await expect(readJsonObject(json('{"f":{"status":"a","status":"b"}}'))).rejects.toMatchObject({
      detail: { parameter: 'f.status' },
    });
    await expect(readParams(json('{"a":"1","b":"2"}'))).resolves.toEqual({ a: '1', b: '2' });
  });

  test('parameter names are own names only: __proto__ is kept as data, toString is not "present"', async () => {
    const p = await readParams(json('{"__proto__":"x","a":"1"}'));
    expect(Object.keys(p)).toEqual(['__proto__', 'a']);
    expect(p.toString).toBeUndefined();
    const f = await readParams(
      new HttpRequest({
        method: 'POST',
        url: 'http://h/api/x',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: { string: '__proto__=x&constructor=y' },
      }),
    );
    expect(Object.keys(f)).toEqual(['__proto__', 'constructor']);
    expect(f.hasOwnProperty).toBeUndefined();
  });
});

describe('query-string switches', () => {
  const req = (qs: string) => new HttpRequest({ method: 'GET', url: `http://h/api/x${qs}` });
  test('one value is read, a repeated one refused (never first-wins)', () => {
    expect(queryParam(req('?dryRun=false'), 'dryRun')).toBe('false');
    expect(queryParam(req(''), 'dryRun')).toBeUndefined();
    expect(() => queryParam(req('?dryRun=true&dryRun=false'), 'dryRun')).toThrow(
      expect.objectContaining({ code: 'bad_request', detail: { parameter: 'dryRun' } }),
    );
    expect(() => queryParam(req('?dryRun=false&dryRun=false'), 'dryRun')).toThrow(
      expect.objectContaining({ code: 'bad_request' }),
    );
  });
});
