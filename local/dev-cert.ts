import { optionList, optionValue, parseCliArgs } from './cli-args';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadClientCa } from './pki';
import { CURRENT_LINK } from './sandbox';

/**
 * `npm run dev-cert -- [--cn NAME] [--org ORG] [--dns a,b] [--uri u1,u2] [--days N] [--no-client-auth] [--out DIR]`
 * issues a client certificate with the running sandbox's client CA (the CA in BROKER_CLIENT_CA_BUNDLE) and prints
 * the base64 of its DER: what APIM forwards in X-Client-Certificate after mTLS. `--out DIR` also writes cert.pem and
 * key.pem; `--thumbprint` prints the SHA-256 thumbprint on a second line.
 */

const HELP = `Usage: npm run dev-cert -- [options]
  --cn NAME            subject common name (default partner-job)
  --org ORG            subject organization (default "Sandbox Partner"; "" for none)
  --dns a,b            DNS subject alternative names
  --uri u1,u2          URI subject alternative names (e.g. spiffe://sandbox/partner-job)
  --days N             validity in days (default 30; negative gives an expired certificate)
  --no-client-auth     without the clientAuth extended key usage (the broker refuses it)
  --thumbprint         print the SHA-256 thumbprint (the subject_token of a certificate exchange) on a second line
  --out DIR            also write DIR/cert.pem and DIR/key.pem`;

function main(): void {
  const args = parseCliArgs(process.argv.slice(2), ['no-client-auth', 'thumbprint', 'help']);
  if (args.help) {
    process.stdout.write(HELP + '\n');
    return;
  }
  const known = new Set(['cn', 'org', 'dns', 'uri', 'days', 'no-client-auth', 'thumbprint', 'out', 'help']);
  for (const k of Object.keys(args)) if (!known.has(k)) throw new Error(`Unknown option --${k}.\n${HELP}`);
  const dir = process.env.SANDBOX_STATE_DIR || CURRENT_LINK;
  let ca;
  try {
    ca = loadClientCa(readFileSync(join(dir, 'client-ca.pem'), 'utf8'), readFileSync(join(dir, 'client-ca.key'), 'utf8'));
  } catch {
    throw new Error(
      `No running sandbox client CA found (${join(dir, 'client-ca.pem')}). Start it first with \`npm start\` (or set SANDBOX_STATE_DIR).`,
    );
  }
  const str = (k: string) => optionValue(args, k);
  const list = (k: string) => optionList(args, k);
  const days = str('days') ?? '30';
  if (!/^-?\d+$/.test(days)) throw new Error('--days must be a whole number.');
  const d = Number(days);
  const now = Date.now();
  const cert = ca.issueClient({
    commonName: str('cn') ?? 'partner-job',
    organization: str('org') ?? 'Sandbox Partner',
    dnsNames: list('dns'),
    uris: list('uri'),
    notBefore: new Date(Math.min(now - 60_000, now + d * 86400_000 - 60_000)),
    notAfter: new Date(now + d * 86400_000),
    clientAuth: args['no-client-auth'] !== true,
  });
  const out = str('out');
  if (out) {
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'cert.pem'), cert.certPem);
    writeFileSync(join(out, 'key.pem'), cert.keyPem, { mode: 0o600 });
  }
  process.stdout.write(cert.base64 + '\n' + (args.thumbprint === true ? cert.thumbprint + '\n' : ''));
}

try {
  main();
} catch (e) {
  process.stderr.write(`dev-cert: ${(e as Error).message}\n`);
  process.exit(1);
}
