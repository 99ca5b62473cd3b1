import { parseForm } from '../../../shared/http/request';

/** The broker's form parser gives exactly what URLSearchParams gives (the RFC 6749/8693 bodies), just faster. */
const same = (text: string) => expect([text, parseForm(text)]).toEqual([text, [...new URLSearchParams(text)]]);

describe('parseForm matches URLSearchParams', () => {
  test('token requests and the edges of the format', () => {
    for (const text of [
      '',
      '&',
      '&&a=1&&',
      'a',
      'a=',
      '=b',
      '=',
      'a=1&a=2',
      'a=b=c',
      'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln',
      'scope=a+b%20c&x=%2B',
      'name+with+plus=v',
      '%zz=%&bad=%e2%82&trail=%4',
      'utf8=%E2%82%AC%F0%9F%98%80&raw=€😀',
      'surrogate=%ED%A0%80&overlong=%C0%AF',
      'bom=%EF%BB%BFx',
      '__proto__=1&toString=2',
      '?grant_type=x&a=1',
      '??a=1',
      'a=1&?b=2',
      'a=1&?%zz=2',
      '?%zz',
    ])
      same(text);
  });

  test('seeded random strings over the format’s special characters', () => {
    const alphabet = ['a', 'B', '0', '=', '&', '+', '%', '%2', '%41', '%e2', '%82', '%ac', '%ff', 'é', ' ', '€', 'z', '?'];
    let seed = 27;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const inputs = Array.from({ length: 5000 }, () =>
      Array.from({ length: Math.floor(next() * 24) }, () => alphabet[Math.floor(next() * alphabet.length)]).join(''),
    );
    // Twice: the second pass meets every short name and value again (decoded ones are remembered).
    for (const input of [...inputs, ...inputs]) same(input);
  });
});
