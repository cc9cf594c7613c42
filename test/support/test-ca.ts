/**
 * A throwaway certificate authority for the TLS tests (issue #14), made with openssl as an operator
 * would: a self-signed CA, server certificates it signs with SANs for 127.0.0.1 and localhost (what
 * clients check: dockerd, containerd, podman and skopeo all verify the SAN, never the CN), and
 * client certificates for `tls.clientCA`. Everything lives in one temp directory.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';

export interface IssuedCertificate {
  /** PEM files. */
  readonly certificate: string;
  readonly key: string;
  /** SHA-256 fingerprint, as node:tls reports a peer certificate's `fingerprint256`. */
  readonly fingerprint: string;
}

export interface TestCa {
  readonly dir: string;
  /** The CA certificate (PEM file): what clients are told to trust. */
  readonly caCertificate: string;
  /** A server certificate for `sans` (default 127.0.0.1 and localhost), valid `days` (default 30). */
  issueServer(name: string, opts?: { sans?: readonly string[]; days?: number }): IssuedCertificate;
  /** A client certificate with this CN. */
  issueClient(cn: string): IssuedCertificate;
  close(): void;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

export function createTestCa(label = 'hubcache test CA'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'hubcache-ca-'));
  const caKey = join(dir, 'ca.key');
  const caCertificate = join(dir, 'ca.crt');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', caCertificate, '-days', '30', '-subj', `/CN=${label}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  let serial = 1;
  const issue = (name: string, ext: string, cn: string, days: number): IssuedCertificate => {
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const certificate = join(dir, `${name}.crt`);
    const extFile = join(dir, `${name}.ext`);
    writeFileSync(extFile, ext);
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
    openssl(['x509', '-req', '-in', csr, '-CA', caCertificate, '-CAkey', caKey, '-set_serial', String(serial++), '-days', String(days), '-out', certificate, '-extfile', extFile]);
    return { certificate, key, fingerprint: new X509Certificate(readFileSync(certificate)).fingerprint256 };
  };
  return {
    dir,
    caCertificate,
    issueServer: (name, opts = {}) => {
      const sans = (opts.sans ?? ['127.0.0.1', 'localhost']).map((s) => (/^[\d.]+$|:/.test(s) ? `IP:${s}` : `DNS:${s}`)).join(',');
      return issue(name, `subjectAltName=${sans}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`, name, opts.days ?? 30);
    },
    issueClient: (cn) => issue(`client-${cn}`, 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n', cn, 30),
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
