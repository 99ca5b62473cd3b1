import { formatTarget, parseTarget } from '../../../shared/policy/target';

const SQL = 'cloudsql://sandbox-project/europe-west1/orders-db/orders';
const COSMOS = 'cosmos://sandbox-cosmos/app/profiles';

describe('targets are accepted only in canonical form (nothing resolved, decoded or stripped)', () => {
  test.each([
    SQL,
    COSMOS,
    `${COSMOS}?mode=read`,
    `${COSMOS}?partitionKey=0b5e0000-0000-0000-0000-00000000ead1`,
    `${COSMOS}?mode=all&partitionKey=a%20b%2Fc`,
    'query://order-count',
  ])('%s round-trips exactly', (uri) => {
    expect(formatTarget(parseTarget(uri))).toBe(uri);
  });

  test.each([
    // dot segments, raw and encoded
    'cloudsql://sandbox-project/europe-west1/x/../orders-db/orders',
    'cloudsql://sandbox-project/europe-west1/./orders-db/orders',
    'cloudsql://sandbox-project/europe-west1/orders-db/orders/..',
    'cloudsql://sandbox-project/europe-west1/%2e%2e/orders-db/orders',
    'cloudsql://sandbox-project/europe-west1/orders-db/%2E%2E',
    'cosmos://sandbox-cosmos/app/x/../profiles',
    'cosmos://sandbox-cosmos/app/./profiles',
    'cosmos://sandbox-cosmos/app/..',
    'cosmos://sandbox-cosmos/app/%2e%2e',
    'cosmos://sandbox-cosmos/app/.hidden',
    // doubled and trailing slashes
    'cloudsql://sandbox-project//europe-west1/orders-db/orders',
    'cloudsql://sandbox-project/europe-west1/orders-db/orders/',
    'cosmos://sandbox-cosmos//app/profiles',
    'cosmos://sandbox-cosmos/app/profiles/',
    'query://order-count/',
    'query://order-count//',
    'query:///order-count',
    // control characters and whitespace inside segments (the URL parser strips tab/CR/LF)
    'cloudsql://sandbox-project/europe-west1/orders-db/ord\ters',
    'cloudsql://sandbox-project/europe-west1/orders-db/ord\rers',
    'cloudsql://sandbox-project/europe-west1/orders-db/ord\ners',
    'cosmos://sandbox-cosmos/app/prof\tiles',
    'query://order\n-count',
    'cosmos://sandbox-cosmos/app/pro files',
    ` ${SQL}`,
    `${SQL} `,
    `${SQL}\n`,
    `${COSMOS}\u0000`,
    `${COSMOS}?partitionKey=a%0Ab`,
    `${COSMOS}?partitionKey=a%00`,
    `${COSMOS}?partitionKey=%C2%85`,
    // percent-encoding in the path, any case
    'cloudsql://sandbox-project/europe-west1/orders-db/%6frders',
    'cosmos://sandbox-cosmos/app/%70rofiles',
    'cosmos://sandbox-cosmos/%61pp/profiles',
    'query://order%2Dcount',
    // non-canonical query strings
    `${COSMOS}?partitionKey=x&mode=read`,
    `${COSMOS}?partitionKey=a+b`,
    `${COSMOS}?partitionKey=a%2fb`,
    `${COSMOS}?partitionKey=%`,
    `${COSMOS}?partitionKey=%E0%A4%A`,
    `${COSMOS}?partitionKey=%FF`,
    `${COSMOS}?`,
    `${COSMOS}?mode=read&`,
    `${COSMOS}?&mode=read`,
    `${COSMOS}?partitionKey=`,
    `${COSMOS}?mode=read&mode=read`,
    `${COSMOS}?partitionKey=a&partitionKey=a`,
    `${COSMOS}?Mode=read`,
    // case, userinfo, port, fragment, non-ASCII
    'CLOUDSQL://sandbox-project/europe-west1/orders-db/orders',
    'Cosmos://sandbox-cosmos/app/profiles',
    'cloudsql://user@sandbox-project/europe-west1/orders-db/orders',
    'cosmos://sandbox-cosmos:443/app/profiles',
    `${SQL}#frag`,
    `${COSMOS}#`,
    'cosmos://sandbox-cosmos/app/prоfiles', // Cyrillic о
    'cloudsql:sandbox-project/europe-west1/orders-db/orders',
    'cloudsql:/sandbox-project/europe-west1/orders-db/orders',
    'cloudsql:\\\\sandbox-project\\europe-west1\\orders-db\\orders',
  ])('%j is an invalid_target', (uri) => {
    expect(() => parseTarget(uri)).toThrow(
      expect.objectContaining({ code: 'invalid_target', detail: { parameter: 'resource' } }),
    );
  });

  test('an error never echoes the control characters it refused', () => {
    try {
      parseTarget('cosmos://sandbox-cosmos/app/pro\r\nSet-Cookie: x');
      throw new Error('accepted');
    } catch (e) {
      expect((e as Error).message).not.toMatch(/[\r\n]|Set-Cookie/);
    }
  });
});
