// The Dockerfile, checked without a Docker engine: its stages are replayed on the host (context
// COPYs honour .dockerignore, `npm ci --omit=dev` becomes a node_modules holding only the production
// dependencies, `npm run build` runs for real), then the image's ENTRYPOINT + CMD is started with the
// image's ENV, answers /healthz (and the HEALTHCHECK command agrees), and exits 0 on SIGTERM.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { dockerignore, keyValues, parseDockerfile, type Instruction, type Stage } from './support/dockerfile.js';
import { ROOT } from './support/metrics-catalog.js';

const dockerfileText = readFileSync(`${ROOT}Dockerfile`, 'utf8');
const dockerfile = parseDockerfile(dockerfileText);
const ignored = dockerignore(readFileSync(`${ROOT}.dockerignore`, 'utf8'));
const [buildStage, runtime] = [dockerfile.stages[0]!, dockerfile.stages.at(-1)!];
const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);
const one = (stage: Stage, keyword: string): Instruction => {
  const found = all(stage, keyword);
  assert.equal(found.length, 1, `expected one ${keyword} in stage ${stage.name}, found ${found.length}`);
  return found[0]!;
};
const runtimeEnv = Object.assign({}, ...all(runtime, 'ENV').map((i) => keyValues(i.raw))) as Record<string, string>;

// Node.js LTS lines and their end of life (https://github.com/nodejs/release#release-schedule), as
// data: the checks below hold the image, the Dockerfile's comment and the README to it, and none
// compares it with today's date (issue #12: that made the suite fail on a calendar date with no
// change to the code). Moving the image to a newer line starts with adding that line here.
const NODE_LTS_EOL: Record<string, string> = { '20': '2026-04-30', '22': '2027-04-30', '24': '2028-04-30' };
const NEWEST_LTS = Object.keys(NODE_LTS_EOL).sort((a, b) => Number(b) - Number(a))[0]!;
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** Copies `src` (file or directory, context-relative) to `dest`, leaving out what .dockerignore excludes. */
function copyFromContext(src: string, dest: string): void {
  assert.ok(!ignored(src), `COPY ${src}: excluded by .dockerignore`);
  assert.ok(existsSync(join(ROOT, src)), `COPY ${src}: not in the build context`);
  cpSync(join(ROOT, src), dest, { recursive: true, filter: (from) => !ignored(relative(ROOT, from) || '.') || from === join(ROOT, src) });
}

/** Replays a stage's WORKDIR/COPY/RUN into `root` (the stage's filesystem root, as a directory). */
function replay(stage: Stage, root: string, stages: Map<string, string>, run: (cmd: string, cwd: string) => void): void {
  let workdir = '/';
  for (const ins of stage.instructions) {
    if (ins.keyword === 'WORKDIR') {
      workdir = ins.args[0]!.startsWith('/') ? ins.args[0]! : join(workdir, ins.args[0]!);
      mkdirSync(join(root, workdir), { recursive: true });
    } else if (ins.keyword === 'COPY') {
      const words = ins.json ?? ins.args;
      const [sources, target] = [words.slice(0, -1), words.at(-1)!];
      const destDir = join(root, target.startsWith('/') ? target : join(workdir, target));
      for (const src of sources) {
        const dest = target.endsWith('/') || sources.length > 1 ? join(destDir, src.split('/').at(-1)!) : destDir;
        mkdirSync(dirname(dest), { recursive: true });
        if (ins.flags.from) {
          const from = stages.get(ins.flags.from);
          assert.ok(from, `COPY --from=${ins.flags.from}: no such stage`);
          assert.ok(existsSync(join(from, src)), `COPY --from=${ins.flags.from} ${src}: the stage did not produce it`);
          cpSync(join(from, src), dest, { recursive: true });
        } else copyFromContext(src, dest);
      }
    } else if (ins.keyword === 'RUN') {
      run(ins.raw, join(root, workdir));
    }
  }
}

/** The production dependencies in package-lock.json (what `npm ci --omit=dev` installs), top level only. */
function productionPackages(): string[] {
  const lock = JSON.parse(readFileSync(`${ROOT}package-lock.json`, 'utf8')) as { packages: Record<string, { dev?: boolean; devOptional?: boolean }> };
  return Object.entries(lock.packages)
    .filter(([path, p]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && !p.dev && !p.devOptional)
    .map(([path]) => path.slice('node_modules/'.length));
}

function linkPackages(nodeModules: string, names: string[]): void {
  for (const name of names) {
    mkdirSync(dirname(join(nodeModules, name)), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules', name), join(nodeModules, name), 'dir');
  }
}

describe('Dockerfile', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'hubcache-image-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('builds in a named stage and runs on the newest Node.js LTS line listed here (slim image), one that satisfies engines.node', () => {
    assert.equal(dockerfile.stages.length, 2);
    assert.equal(buildStage.name, 'build');
    for (const stage of dockerfile.stages) {
      const m = /^node:(\d+)(?:\.\d+)*-bookworm-slim(?:@sha256:[0-9a-f]{64})?$/.exec(stage.image);
      assert.ok(m, `base image ${stage.image}: expected node:<lts>-bookworm-slim`);
      const major = m[1]!;
      assert.ok(Number(major) % 2 === 0 && NODE_LTS_EOL[major], `node ${major} is not an LTS line (LTS majors are even; known: ${Object.keys(NODE_LTS_EOL).join(', ')})`);
      assert.equal(major, NEWEST_LTS, `node ${major}: the image should be on the newest LTS line, node ${NEWEST_LTS} (older lines reach their end of life first)`);
      const engines = /^>=\s*(\d+)(?:\.\d+)*$/.exec((JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { engines: { node: string } }).engines.node);
      assert.ok(engines, 'package.json engines.node: expected ">=MAJOR[.MINOR]"');
      assert.ok(Number(major) >= Number(engines[1]), `node ${major} does not satisfy engines.node ${engines[0]}`);
    }
    assert.equal(runtime.image, buildStage.image, 'build and runtime should share the base image');
  });

  it('says which LTS line the image is on, and until when, as the table does: the Dockerfile comment and the README', () => {
    const major = /^node:(\d+)/.exec(runtime.image)![1]!;
    assert.ok(NODE_LTS_EOL[major], `node ${major} is not in the LTS table`);
    const eol = new Date(`${NODE_LTS_EOL[major]}T00:00:00Z`);
    const stated = /Node\.js (\d+) is the active LTS \(supported until (\w+) (\d{4})\)/.exec(dockerfileText);
    assert.ok(stated, 'the Dockerfile should say "Node.js <major> is the active LTS (supported until <Month> <year>)" above its base image');
    assert.deepEqual(stated.slice(1), [major, MONTHS[eol.getUTCMonth()], String(eol.getUTCFullYear())], `node ${major}'s end of life is ${NODE_LTS_EOL[major]}`);
    const readme = readFileSync(`${ROOT}README.md`, 'utf8');
    const images = [...readme.matchAll(/`node:(\d+)-bookworm-slim`/g)].map((x) => x[1]);
    assert.ok(images.length > 0, 'the README should name the base image');
    assert.deepEqual(new Set(images), new Set([major]), 'the README names the base image the Dockerfile uses');
    assert.ok(readme.includes(`(Node.js ${major} LTS)`), `the README should say "(Node.js ${major} LTS)"`);
  });

  it('runs as a non-root numeric user that the image creates', () => {
    const user = one(runtime, 'USER').args[0]!;
    const [uid, gid] = user.split(':');
    assert.match(uid!, /^\d+$/, 'USER must be numeric for Kubernetes runAsNonRoot');
    assert.notEqual(Number(uid), 0);
    assert.notEqual(Number(gid ?? uid), 0);
    const created = all(runtime, 'RUN').some((r) => new RegExp(`useradd\\b[^&]*--uid ${uid}\\b`).test(r.raw));
    assert.ok(created || uid === '1000', `no useradd --uid ${uid} in the runtime stage`);
    assert.ok(all(runtime, 'RUN').some((r) => new RegExp(`chown ${uid}:${gid ?? uid} /var/lib/hubcache`).test(r.raw)), 'the store directory must belong to the user');
  });

  it('declares the store volume, the listen address, the port, the stop signal and OCI labels', () => {
    assert.equal(runtimeEnv.HUBCACHE_STORAGE_PATH, '/var/lib/hubcache');
    assert.equal(runtimeEnv.HUBCACHE_LISTEN, '0.0.0.0:5000');
    assert.deepEqual(one(runtime, 'VOLUME').args, ['/var/lib/hubcache']);
    assert.deepEqual(one(runtime, 'EXPOSE').args, [runtimeEnv.HUBCACHE_LISTEN!.split(':').at(-1)]);
    assert.deepEqual(one(runtime, 'STOPSIGNAL').args, ['SIGTERM']);
    const labels = keyValues(one(runtime, 'LABEL').raw);
    for (const key of ['title', 'description', 'version', 'revision', 'licenses', 'base.name']) {
      assert.ok(labels[`org.opencontainers.image.${key}`], `missing label org.opencontainers.image.${key}`);
    }
    assert.equal(labels['org.opencontainers.image.licenses'], JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')).license);
    assert.deepEqual(one(runtime, 'ENTRYPOINT').json, ['node', '/app/bin/hubcache.js']);
    assert.deepEqual(one(runtime, 'CMD').json, ['serve']);
  });

  it('keeps build output, dependencies and secrets out of the build context', () => {
    for (const path of ['node_modules/express/package.json', 'dist/cli.js', '.git/config', 'tools/bin/helm', 'data/blobs', 'src/config/load.test.ts']) {
      assert.ok(ignored(path), `${path} should be excluded by .dockerignore`);
    }
    for (const path of ['package.json', 'package-lock.json', '.npmrc', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs', 'src/cli.ts', 'bin/hubcache.js']) {
      assert.ok(!ignored(path), `${path} is needed by the build`);
    }
  });

  describe('replayed on the host', () => {
    const buildRoot = join(tmp, 'build');
    const imageRoot = join(tmp, 'image');
    const storage = join(tmp, 'store');
    let app: string;

    before(() => {
      // build stage: npm ci → the checkout's node_modules; every other RUN (npm run build) for real.
      replay(buildStage, buildRoot, new Map(), (cmd, cwd) => {
        if (/^npm ci\b/.test(cmd)) return symlinkSync(join(ROOT, 'node_modules'), join(cwd, 'node_modules'), 'dir');
        assert.equal(cmd, 'npm run build', `unexpected RUN in the build stage: ${cmd}`);
        try {
          execFileSync('npm', ['run', 'build'], { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
        } catch (err) {
          const { stdout, stderr } = err as { stdout?: string; stderr?: string };
          throw new Error(`npm run build failed (as it would in docker build):\n${stdout ?? ''}${stderr ?? ''}`);
        }
      });
      // runtime stage: npm ci --omit=dev → only the production packages; user creation is for root.
      replay(runtime, imageRoot, new Map([['build', buildRoot]]), (cmd, cwd) => {
        if (/^npm ci --omit=dev\b/.test(cmd)) return linkPackages(join(cwd, 'node_modules'), productionPackages());
        assert.match(cmd, /^groupadd /, `unexpected RUN in the runtime stage: ${cmd}`);
      });
      app = join(imageRoot, 'app');
      mkdirSync(storage);
    });

    it('produces the compiled CLI and everything the runtime stage copies', () => {
      assert.ok(statSync(join(app, 'dist', 'cli.js')).isFile());
      assert.ok(statSync(join(app, 'bin', 'hubcache.js')).isFile());
      assert.ok(!readdirSync(join(app, 'node_modules')).includes('tsx'), 'devDependencies must not reach the image');
      assert.ok(!readdirSync(join(app, 'node_modules')).includes('typescript'));
    });

    it('starts from ENTRYPOINT + CMD with the image ENV, answers /healthz and the HEALTHCHECK, exits 0 on SIGTERM', async () => {
      const entrypoint = [...one(runtime, 'ENTRYPOINT').json!, ...one(runtime, 'CMD').json!].map((a) => a.replace(/^\/app\//, `${app}/`));
      assert.equal(entrypoint[0], 'node');
      const env = { PATH: process.env.PATH ?? '', HOME: tmp, ...runtimeEnv };
      const child = spawn(process.execPath, [...entrypoint.slice(1), '--listen', '127.0.0.1:0', '--storage-path', storage, '--upstream-url', 'http://127.0.0.1:9'], {
        cwd: app,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = once(child, 'exit');
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      try {
        const lines = createInterface({ input: child.stdout });
        const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
          lines.on('line', (text) => {
            try {
              const line = JSON.parse(text) as Record<string, unknown>;
              if (line.message === 'hubcache started') resolve(line);
            } catch {
              // not a JSON log line
            }
          });
          void exited.then(([code]) => reject(new Error(`exited with ${code} before starting: ${stderr}`)));
        });
        assert.equal(started.storage, storage);
        const url = String(started.listen);
        const health = await fetch(`${url}/healthz`);
        assert.equal(health.status, 200);
        assert.deepEqual(await health.json(), { status: 'ok' });
        const ready = await fetch(`${url}/readyz`);
        assert.equal(ready.status, 200, await ready.clone().text());
        assert.equal(((await ready.json()) as { status: string }).status, 'ready');

        // The HEALTHCHECK command, with HUBCACHE_LISTEN pointing where this instance listens.
        const hc = one(runtime, 'HEALTHCHECK');
        const cmd = JSON.parse(hc.raw.slice(hc.raw.indexOf('CMD') + 3).trim()) as string[];
        assert.equal(cmd[0], 'node');
        const probe = (listen: string) =>
          new Promise<number | null>((resolve) => {
            const p = spawn(process.execPath, cmd.slice(1), { env: { ...env, HUBCACHE_LISTEN: listen }, stdio: 'ignore' });
            p.on('exit', resolve);
          });
        assert.equal(await probe(`0.0.0.0:${new URL(url).port}`), 0);
        assert.equal(await probe('127.0.0.1:9'), 1, 'the health check must fail when nothing answers');

        child.kill('SIGTERM');
        const [code] = await exited;
        assert.equal(code, 0, stderr);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    });
  });
});
