import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * No Bicep or Terraform CLI runs here, so the wiring between files is checked from their text: what `bicep build`
 * and `terraform validate` would catch first (a module parameter that does not exist, a required one not passed, an
 * output that is not declared, a file that loadTextContent cannot find, an azd parameter with no Bicep parameter),
 * plus the least-privilege rules of the Google side.
 */

const root = join(__dirname, '..', '..');
const infra = join(root, 'infra');
const text = (p: string) => readFileSync(p, 'utf8');
const mainPath = join(infra, 'main.bicep');
const main = text(mainPath);

interface BicepFile {
  readonly params: Map<string, { hasDefault: boolean }>;
  readonly outputs: Set<string>;
}

function bicepFile(src: string): BicepFile {
  const params = new Map<string, { hasDefault: boolean }>();
  for (const m of src.matchAll(/^param (\w+) [\w.]+( =)?/gm)) params.set(m[1]!, { hasDefault: m[2] !== undefined });
  return { params, outputs: new Set([...src.matchAll(/^output (\w+) /gm)].map((m) => m[1]!)) };
}

/** `module sym 'path' = { ... params: { k: v, ... } }` blocks of main.bicep, with the keys of their params. */
function modules(src: string): { symbol: string; path: string; keys: string[] }[] {
  const found: { symbol: string; path: string; keys: string[] }[] = [];
  for (const m of src.matchAll(/^module (\w+) '([^']+)' = (?:if \(.*\) )?\{\n([\s\S]*?)\n\}/gm)) {
    const body = m[3]!;
    const inline = /^ {2}params: \{ (.*) \}$/m.exec(body);
    let keys: string[];
    if (inline) {
      keys = inline[1]!.split(',').map((kv) => kv.split(':')[0]!.trim());
    } else {
      const block = /^ {2}params: \{\n([\s\S]*?)\n {2}\}/m.exec(body);
      keys = block ? [...block[1]!.matchAll(/^ {4}(\w+):/gm)].map((k) => k[1]!) : [];
    }
    found.push({ symbol: m[1]!, path: m[2]!, keys });
  }
  return found;
}

const mods = modules(main);

test('main.bicep: every module exists, gets only parameters it declares and every one it requires', () => {
  expect(mods.map((m) => m.symbol).sort()).toEqual([
    'apim',
    'callerObo',
    'cosmos',
    'functionApp',
    'identities',
    'keyVault',
    'monitoring',
    'storage',
  ]);
  for (const m of mods) {
    const file = join(infra, m.path);
    expect(existsSync(file)).toBe(true);
    const { params } = bicepFile(text(file));
    expect({ module: m.symbol, unknown: m.keys.filter((k) => !params.has(k)) }).toEqual({ module: m.symbol, unknown: [] });
    const missing = [...params].filter(([n, p]) => !p.hasDefault && !m.keys.includes(n)).map(([n]) => n);
    expect({ module: m.symbol, missing }).toEqual({ module: m.symbol, missing: [] });
  }
});

test('every `<module>.outputs.X` used is an output of that module', () => {
  const outputsOf = new Map(mods.map((m) => [m.symbol, bicepFile(text(join(infra, m.path))).outputs]));
  const uses = [...main.matchAll(/\b(\w+)\.outputs\.(\w+)/g)];
  expect(uses.length).toBeGreaterThan(10);
  for (const [, sym, out] of uses)
    expect({ ref: `${sym}.outputs.${out}`, ok: outputsOf.get(sym!)?.has(out!) ?? false }).toEqual({
      ref: `${sym}.outputs.${out}`,
      ok: true,
    });
});

test('every file a Bicep file loads exists (policies, fragments, openapi.yaml)', () => {
  const bicepFiles = [mainPath, ...readdirSync(join(infra, 'modules')).map((f) => join(infra, 'modules', f))];
  const loads = bicepFiles.flatMap((f) =>
    [...text(f).matchAll(/loadTextContent\('([^']+)'\)/g)].map((m) => join(dirname(f), m[1]!)),
  );
  expect(loads.some((l) => l.endsWith('openapi.yaml'))).toBe(true);
  expect(loads.filter((l) => !existsSync(l))).toEqual([]);
  // Bicep's loadTextContent refuses files over 131,072 characters
  for (const l of loads) expect({ file: l, fits: text(l).length <= 131072 }).toEqual({ file: l, fits: true });
  // APIM imports OpenAPI 3.1 (import only) but cannot follow $ref pointers to other files
  const openapi = text(join(root, 'openapi.yaml'));
  expect([...openapi.matchAll(/\$ref: ['"]?([^'"\s]+)/g)].map((m) => m[1]!).filter((r) => !r.startsWith('#/'))).toEqual([]);
});

test('azd: main.parameters.json names only Bicep parameters, and sets every required one; outputs are UPPER_SNAKE', () => {
  const { params, outputs } = bicepFile(main);
  const given = Object.keys(
    (JSON.parse(text(join(infra, 'main.parameters.json'))) as { parameters: Record<string, unknown> }).parameters,
  );
  expect(given.filter((g) => !params.has(g))).toEqual([]);
  expect([...params].filter(([n, p]) => !p.hasDefault && !given.includes(n)).map(([n]) => n)).toEqual([]);
  for (const o of outputs) expect(o).toMatch(/^[A-Z][A-Z0-9_]*$/);
  // what the walkthrough feeds into Terraform
  for (const o of ['AZURE_TENANT_ID', 'BROKER_IDENTITY_PRINCIPAL_ID', 'APIM_GATEWAY_URL', 'APIM_IDENTITY_PRINCIPAL_ID'])
    expect(outputs.has(o)).toBe(true);
  expect(text(join(root, 'azure.yaml'))).toMatch(/host: function/);
});

test('caller identity mode: the OBO apps trust the broker identity by a FIC (Microsoft Graph Bicep), only when turned on', () => {
  const obo = text(join(infra, 'modules', 'caller-obo.bicep'));
  const config = JSON.parse(text(join(infra, 'bicepconfig.json'))) as { extensions: Record<string, string> };
  expect(obo).toMatch(/^extension microsoftGraphV1$/m);
  expect(config.extensions.microsoftGraphV1).toMatch(
    /^br:mcr\.microsoft\.com\/bicep\/extensions\/microsoftgraph\/v1\.0:\d+\.\d+\.\d+$/,
  );
  const fics = [
    ...obo.matchAll(
      /^resource (\w+) 'Microsoft\.Graph\/applications\/federatedIdentityCredentials@v1\.0' = [^\n]*\{\n([\s\S]*?)\n\}/gm,
    ),
  ];
  expect(fics.map((f) => f[1])).toEqual(['oboFic', 'mcpFic']);
  for (const [, , body] of fics) {
    // name = PARENT_UNIQUE_NAME/FIC_NAME; subject = the managed identity's principal (object) id; Entra's one audience.
    expect(body).toMatch(/^ {2}name: '\$\{\w+\.uniqueName\}\/[\w-]+'$/m);
    expect(body).toMatch(/^ {2}subject: brokerPrincipalId$/m);
    expect(body).toMatch(/^ {2}issuer: issuer$/m);
    expect(body).toMatch(/^ {2}audiences: audiences$/m);
  }
  expect(obo).toContain("var issuer = '${environment().authentication.loginEndpoint}${tenantId}/v2.0'");
  expect(obo).toContain("var audiences = [ 'api://AzureADTokenExchange' ]");
  expect(main).toMatch(/^module callerObo 'modules\/caller-obo\.bicep' = if \(callerOboFederatedCredentials\) \{$/m);
  expect(main).toMatch(/^param callerOboFederatedCredentials bool = false$/m);
  expect(main).toContain('brokerPrincipalId: identities.outputs.brokerPrincipalId');
});

test("Application Insights refuses key-based ingestion only if the broker's exporter has an Entra credential", () => {
  const monitoring = text(join(infra, 'modules', 'monitoring.bicep'));
  const telemetry = text(join(root, 'shared', 'observability', 'telemetry.ts'));
  const disabled = /^param disableLocalAuth bool = true$/m.test(monitoring) || /DisableLocalAuth: true/.test(monitoring);
  const exporterHasCredential = /azureMonitorExporterOptions: \{[^}]*credential/.test(telemetry);
  // Local auth off + connection-string-only exporter = every metric and trace of the broker rejected (401).
  expect(disabled && !exporterHasCredential).toBe(false);
  expect(monitoring).toMatch(/DisableLocalAuth: disableLocalAuth/);
});

test('resource names fit their limits for the longest environment name, keeping the unique suffix', () => {
  expect(main).toContain(
    "var name = toLower('${take(environmentName, 24)}-${take(uniqueString(subscription().id, environmentName, location), 6)}')",
  );
  const longest = 24 + 1 + 6;
  const limits: Record<string, number> = {
    'apim.bicep': 50,
    'cosmos.bicep': 44,
    'functionapp.bicep': 60,
    'monitoring.bicep': 63,
    'identities.bicep': 128,
  };
  for (const [file, limit] of Object.entries(limits)) {
    const names = [...text(join(infra, 'modules', file)).matchAll(/^ {2}name: '([a-z-]*)\$\{name\}'$/gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(0);
    for (const prefix of names)
      expect({ file, prefix, length: prefix.length + longest }).toEqual({
        file,
        prefix,
        length: Math.min(prefix.length + longest, limit),
      });
  }
  for (const file of ['keyvault.bicep', 'storage.bicep']) {
    // 2-letter prefix + the last 22 characters of the hyphen-less name: 24 at most, suffix kept, no hyphen
    expect(text(join(infra, 'modules', file))).toMatch(
      /name: '(kv|st)\$\{substring\(compact, max\(0, length\(compact\) - 22\)\)\}'/,
    );
  }
});

describe('Terraform (infra/gcp)', () => {
  const tf = readdirSync(join(infra, 'gcp'))
    .filter((f) => f.endsWith('.tf'))
    .map((f) => text(join(infra, 'gcp', f)))
    .join('\n');
  const resources = [...tf.matchAll(/^resource "(\w+)" "(\w+)" \{\n([\s\S]*?)\n\}/gm)].map((m) => ({
    type: m[1]!,
    name: m[2]!,
    body: m[3]!,
  }));

  test('every var.X used is declared, and every declared variable is used', () => {
    const declared = new Set([...tf.matchAll(/^variable "(\w+)"/gm)].map((m) => m[1]!));
    const used = new Set([...tf.matchAll(/\bvar\.(\w+)/g)].map((m) => m[1]!));
    expect([...used].filter((u) => !declared.has(u))).toEqual([]);
    expect([...declared].filter((d) => !used.has(d))).toEqual([]);
  });

  test('the pool provider trusts exactly the broker identity of one tenant, for the audience the broker requests', () => {
    const provider = resources.find((r) => r.type === 'google_iam_workload_identity_pool_provider')!;
    // Google's Azure guide: the managed identity's v1.0 token for a dedicated app registration (issuer sts.windows.net,
    // byte-equal to the token's iss: trailing slash); never Entra's token exchange audience
    expect(provider.body).toContain('issuer_uri        = "https://sts.windows.net/${var.azure_tenant_id}/"');
    expect(tf).not.toMatch(/default\s*=\s*"api:\/\/AzureADTokenExchange"/);
    expect(tf).toContain('!contains(["api://azureadtokenexchange", "fb60f99c-7a34-4190-8149-302f77469936"]');
    expect(provider.body).toContain('allowed_audiences = [var.subject_token_audience]');
    expect(provider.body).toMatch(/attribute_condition = ".*assertion\.sub == '\$\{var\.broker_identity_principal_id\}'/);
    expect(provider.body).toMatch(/attribute_condition = ".*assertion\.tid == '\$\{var\.azure_tenant_id\}'/);
  });

  test('impersonation and key rights are bound on service accounts, never project-wide; project grants are Cloud SQL roles pinned to the instance', () => {
    const project = resources.filter((r) => r.type === 'google_project_iam_member');
    expect(project.length).toBeGreaterThan(0);
    for (const r of project) {
      expect(r.body).toMatch(/role {5}= "roles\/cloudsql\.(instanceUser|client)"/);
      expect(r.body).toContain('expression  = local.cloudsql_instance_condition');
    }
    expect(tf).toContain("resource.name == 'projects/${var.project_id}/instances/${var.cloudsql_instance}'");
    for (const role of ['workloadIdentityUser', 'serviceAccountTokenCreator', 'serviceAccountKeyAdmin']) {
      const holders = resources.filter((r) => r.body.includes(`"roles/iam.${role}"`));
      expect(holders.length).toBeGreaterThan(0);
      for (const r of holders) expect(r.type).toBe('google_service_account_iam_member');
    }
    expect(tf).not.toMatch(/google_project_iam_(binding|policy)|roles\/(owner|editor)|roles\/iam\.serviceAccountAdmin/);
  });

  test('IAM database users are service-account users named as Cloud SQL names them; outputs feed the app settings', () => {
    const users = resources.find((r) => r.type === 'google_sql_user')!;
    expect(users.body).toContain('type     = "CLOUD_IAM_SERVICE_ACCOUNT"');
    expect(users.body).toContain('trimsuffix(each.value.email, ".gserviceaccount.com")');
    const outputs = new Set([...tf.matchAll(/^output "(\w+)"/gm)].map((m) => m[1]!));
    for (const o of ['wif_audience', 'rotation_managed_keys', 'google_sa_key_secret', 'service_accounts'])
      expect(outputs.has(o)).toBe(true);
    expect(tf).toContain('value       = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.entra.name}"');
  });
});
