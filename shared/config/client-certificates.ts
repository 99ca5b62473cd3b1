import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { GUID, defineSection, type SettingSpec } from './settings';
import { csv } from './setting-types';

/**
 * Callers authenticated by a client certificate at the gateway (mTLS at APIM, docs/client-certificates.md). Off
 * unless both settings are set: the gateways allowed to vouch for a certificate, and the CA certificates a client
 * certificate must chain to (the broker verifies the certificate again; the gateway's word alone is not enough).
 */

/** A PEM bundle of CA certificates: the PEM text itself (e.g. a Key Vault reference) or the path of a PEM file. */
function caBundle(name: string, doc: string): SettingSpec<readonly X509Certificate[]> & { optional: true } {
  return {
    name,
    doc,
    optional: true,
    parse(raw) {
      const text = raw.startsWith('-----BEGIN') ? raw : existsSync(raw) ? readFileSync(raw, 'utf8') : undefined;
      if (text === undefined) throw new Error('must be PEM CA certificates or the path of a PEM file (no such file)');
      const blocks = text.replace(/\\n/g, '\n').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
      if (blocks.length === 0) throw new Error('holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
      const certs = blocks.map((b, i) => {
        let c: X509Certificate;
        try {
          // The base64 between the markers, whatever its line breaks (Bicep writes one line per certificate).
          const der = Buffer.from(b.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''), 'base64');
          c = new X509Certificate(der);
        } catch {
          throw new Error(`certificate ${i + 1} of the bundle cannot be parsed`);
        }
        if (!c.ca) throw new Error(`certificate ${i + 1} of the bundle (${c.subject.replace(/\n/g, ', ')}) is not a CA`);
        return c;
      });
      const subjects = certs.map((c) => c.subject);
      if (new Set(subjects).size !== subjects.length)
        throw new Error('names two CA certificates with the same subject: a rule naming the issuer by DN would be ambiguous');
      return Object.freeze(certs);
    },
  };
}

export const clientCertificatesConfig = defineSection('clientCertificates', {
  gatewayOids: {
    ...csv('BROKER_CERT_GATEWAY_OIDS', {
      doc: 'Object ids of the gateway identities (each also in BROKER_ALLOWED_CLIENT_OIDS) allowed to vouch for a client certificate in X-Client-Certificate (APIM with mTLS); empty: certificate callers are refused',
      item: GUID,
      itemDoc: 'an object id GUID',
    }),
    optional: true as const,
  },
  caBundle: caBundle(
    'BROKER_CLIENT_CA_BUNDLE',
    'CA certificates a client certificate must chain to (PEM text, e.g. a Key Vault reference, or the path of a PEM file); required when BROKER_CERT_GATEWAY_OIDS is set',
  ),
});
