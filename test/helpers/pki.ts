/** Certificates made by openssl for each test run: never committed, never reused. */
import { execFileSync } from 'node:child_process';
import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A CA, server certificates A and B for 127.0.0.1/localhost, client certificates, and a foreign CA. */
export function makePki(dir: string): void {
  const ca = (name: string): void => {
    openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`);
  };
  ca('test-ca');
  ca('foreign-ca');
  const leaf = (name: string, cn: string, signer: string, server: boolean): void => {
    openssl(dir, 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    const ext = server ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n';
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-CAcreateserial', '-days', '2',
      '-extfile', `${name}.ext`, '-out', `${name}.crt`);
  };
  leaf('server-a', 'uns-bridge-a', 'test-ca', true);
  leaf('server-b', 'uns-bridge-b', 'test-ca', true);
  leaf('client-plc', 'line1-plc', 'test-ca', false);
  leaf('client-ghost', 'ghost', 'test-ca', false);
  leaf('client-foreign', 'line1-plc', 'foreign-ca', false);
}

/** Readable by a server that drops privileges (Mosquitto started as root runs as its own user). */
export function shareReadable(dir: string): void {
  chmodSync(dir, 0o755);
  for (const f of readdirSync(dir)) chmodSync(join(dir, f), 0o644);
}
