import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { ConfigError, loadConfig, redactConfig, SETTINGS } from './config/load.js';
import type { Config } from './config/schema.js';
import { createLogger } from './lib/logger.js';
import type { Hubcache } from './server.js';
import { StoreOwnedError } from './storage/storage.js';

// What a command needs beyond the configuration is imported in its action, not here: `serve`
// doesn't load the commands' code, `ls`/`du`/`--version` don't load the server's graph (express,
// undici, prom-client…), and the YAML writer is loaded by `config print` alone (issue #13, start time).
const startHubcache = async (...args: Parameters<typeof import('./server.js').startHubcache>) => (await import('./server.js')).startHubcache(...args);
const openStorage = async (...args: Parameters<typeof import('./storage/open-storage.js').openStorage>) => (await import('./storage/open-storage.js')).openStorage(...args);

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function withConfigOptions(cmd: Command): Command {
  cmd.addOption(new Option('-c, --config <file>', 'YAML configuration file').env('HUBCACHE_CONFIG'));
  for (const s of SETTINGS) cmd.addOption(new Option(`--${s.flag} <value>`, `${s.help} [env ${s.env}]`));
  return cmd;
}

/** Flags → config. Env vars are read by loadConfig itself, so precedence stays file < env < flags. */
function configFrom(opts: Record<string, string | undefined>): Readonly<Config> {
  const flags: Record<string, string | undefined> = {};
  for (const s of SETTINGS) flags[s.flag] = opts[camel(s.flag)];
  return loadConfig({ file: opts.config, flags });
}

/** The configuration from the file, environment and flags; a ConfigError ends the command (exit 2, the message). */
function configOrFail(opts: Record<string, string | undefined>): Readonly<Config> {
  try {
    return configFrom(opts);
  } catch (err) {
    fail(err);
  }
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function fail(err: unknown, hint?: string): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`hubcache: ${err.message}\n`);
    process.exit(2);
  }
  // An expected refusal, not a bug: the message names the store and the process that owns it.
  if (err instanceof StoreOwnedError) {
    process.stderr.write(`hubcache: ${err.message}\n${hint ? `hubcache: ${hint}\n` : ''}`);
    process.exit(1);
  }
  // `hubcache gc` on a store replicas share: run it through one of them (commands/gc.ts).
  if ((err as Error)?.name === 'GcWithClusterError') {
    process.stderr.write(`hubcache: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.stderr.write(`hubcache: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
}

const program = new Command('hubcache').description('A pull-through caching registry for Docker Hub and other registries').version(version);

withConfigOptions(program.command('serve').description('start the registry mirror')).action(async (opts) => {
  const config = configOrFail(opts);
  // Created here, not by startHubcache, so that a signal during the start can be logged.
  const logger = createLogger({ level: config.log.level, format: config.log.format });
  // The handlers go in before the start: until then SIGTERM's default action would end the process
  // mid-start (a wait for the store's lock can take a while) without a word. A signal during the start
  // stops the server as soon as it is up, with the usual drain; a second signal exits at once.
  let hub: Hubcache | undefined;
  let signals = 0;
  // Ends a start that waits for ownership of the store (up to storage.lockStaleAfter) at once.
  const starting = new AbortController();
  const stop = (h: Hubcache) =>
    h.close().then(
      () => process.exit(0),
      (err) => fail(err),
    );
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn('second signal, exiting now', { signal });
      process.exit(1);
    }
    logger.info('signal received', hub ? { signal } : { signal, starting: true });
    if (hub) void stop(hub);
    else starting.abort(new Error(`${signal} while starting`));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  hub = await startHubcache(config, { version, logger, signal: starting.signal }).catch((err) => {
    if (!starting.signal.aborted) fail(err);
    // Nothing was started (the store is untouched while its lock is awaited): a clean stop.
    logger.info('hubcache stopped', { outcome: 'stopped while starting' });
    process.exit(0);
  });
  if (signals > 0) void stop(hub);
});

const configCmd = program.command('config').description('check or print the effective configuration');
withConfigOptions(configCmd.command('check').description('validate the configuration and exit')).action((opts) => {
  configOrFail(opts);
  process.stdout.write('configuration OK\n');
});
withConfigOptions(configCmd.command('print').description('print the effective configuration (defaults applied, secrets redacted)'))
  .addOption(new Option('--format <format>', 'yaml or json').choices(['yaml', 'json']).default('yaml'))
  .action(async (opts) => {
    const config = configOrFail(opts);
    const redacted = redactConfig(config);
    if (opts.format === 'json') process.stdout.write(`${JSON.stringify(redacted, null, 2)}\n`);
    else process.stdout.write((await import('yaml')).stringify(redacted));
  });

withConfigOptions(
  program
    .command('prefetch')
    .description('warm the cache: pull images through a running instance (--server) or straight into the configured store')
    .argument('[images...]', 'image references, e.g. alpine:3.20 ghcr.io/org/app:1.0')
    .option('-f, --file <file>', 'read image references from a file (one per line, # comments)')
    .option('--server <url>', 'a running hubcache, e.g. http://127.0.0.1:5000')
    .option('--platform <os/arch...>', 'only these platforms of multi-platform images'),
).action(async (images: string[], opts) => {
  const list = [...images];
  if (opts.file) {
    const text = readFileSync(opts.file === '-' ? 0 : opts.file, 'utf8');
    list.push(...text.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean));
  }
  if (list.length === 0) fail(new Error('no images given (arguments or -f FILE)'));
  let server: string = opts.server;
  let local: Hubcache | undefined;
  if (!server) {
    // No instance named: run one in this process on a loopback port, writing into the configured store.
    const config = configOrFail({ ...opts, listen: '127.0.0.1:0' });
    // Its logs (warnings and errors only) go to stderr: stdout carries the summary, for scripts.
    const logger = createLogger({ level: 'warn', format: config.log.format, stream: process.stderr });
    // lockFailFast: a store locked by a process we can't check is refused at once, not waited for.
    local = await startHubcache({ ...config, metrics: { ...config.metrics, listen: undefined }, shutdown: { ...config.shutdown, delay: 0 } }, { version, logger, lockFailFast: true }).catch((err) =>
      fail(err, 'without --server, prefetch writes into the store itself; to warm the store of a running hubcache, pull through it: hubcache prefetch --server http://HOST:PORT IMAGE...'),
    );
    server = local.url;
  }
  const { prefetch } = await import('./commands/prefetch.js');
  const { formatBytes } = await import('./commands/format.js');
  const results = await prefetch({ server, images: list, platforms: opts.platform, progress: process.stderr.isTTY });
  await local?.close(5_000);
  const failed = results.filter((r) => !r.ok);
  const bytes = results.reduce((a, r) => a + r.bytes, 0);
  process.stdout.write(`${results.length - failed.length}/${results.length} images prefetched, ${formatBytes(bytes)}\n`);
  for (const f of failed) process.stdout.write(`  failed: ${f.image}: ${f.error}\n`);
  process.exit(failed.length > 0 ? 1 : 0);
});

withConfigOptions(
  program
    .command('ls')
    .description('list cached repositories, tags and sizes (reads the configured store; changes nothing, safe while serving)')
    .argument('[repository]', 'only repositories starting with this, e.g. alpine, library/alp, ghcr.io/org')
    .option('--json', 'machine-readable output'),
).action(async (filter: string | undefined, opts) => {
  const config = configOrFail(opts);
  const { writeLs } = await import('./commands/ls.js');
  // A reader: no ownership, no init() (it would clear a running instance's writes in progress).
  const storage = await openStorage(config.storage, { logger: createLogger({ level: 'warn', format: config.log.format, stream: process.stderr }), blockingReads: true });
  // `hubcache ls | head`: the reader leaving early is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' ? process.exit(0) : fail(err)));
  // Streamed as the store is read (issue #13): a million tags in bounded memory.
  await writeLs(storage, process.stdout, { json: opts.json === true, now: Date.now(), root: storage.describe().location, filter }).catch(fail);
});

withConfigOptions(
  program
    .command('gc')
    .description('run one tag-retention and eviction pass now (storage.maxSize, storage.minFreeSpace, cache.tagRetention) and print what it removed')
    .option('--dry-run', 'print what would be removed; remove nothing')
    .option('--server <url>', "a running hubcache's metrics listener (metrics.listen), e.g. http://127.0.0.1:9090")
    .option('--json', 'machine-readable output: the report as one JSON document'),
).action(async (opts) => {
  const dryRun = opts.dryRun === true;
  const json = opts.json === true;
  const { gcServer, gcStore, formatItem, formatSummary, writeReport } = await import('./commands/gc.js');
  if (opts.server) {
    const report = await gcServer(opts.server, dryRun).catch(fail);
    writeReport(process.stdout, report, { json });
    process.exit(0);
  }
  const config = configOrFail(opts);
  const logger = createLogger({ level: 'warn', format: config.log.format, stream: process.stderr });
  // Items are printed as they go (a long pass shows its progress); on a terminal a line on stderr
  // says what is being walked first.
  if (process.stderr.isTTY) process.stderr.write(`gc: scanning ${config.storage.driver === 'filesystem' ? config.storage.path : `s3://${config.storage.bucket}/${config.storage.prefix}`}…\n`);
  const report = await gcStore(config, { dryRun, logger, ...(json ? {} : { onRemoved: (item) => process.stdout.write(`${formatItem(item, dryRun)}\n`) }) }).catch((err) =>
    fail(err, 'a running hubcache owns this store: run gc through it instead, on its metrics listener: hubcache gc --server http://HOST:METRICS_PORT (needs metrics.listen)'),
  );
  process.stdout.write(json ? `${JSON.stringify(report)}\n` : `${formatSummary(report)}\n`);
  process.exit(0);
});

withConfigOptions(
  program
    .command('import')
    .description('import a registry:2 (distribution) filesystem store as hosted content: blobs verified, manifests byte-exact, tags; offline (takes the store lock); rerun to resume or to check nothing is missing')
    .argument('<dir>', "the registry's storage rootdirectory (the one holding docker/registry/v2)")
    .option('--repository <pattern...>', 'only these source repositories (patterns like hosted.repositories: myorg/**, ci/*)')
    .option('--dry-run', 'print what would be imported; write nothing'),
).action(async (dir: string, opts) => {
  const config = configOrFail(opts);
  const { importIntoStore, formatImportSummary, formatProblem, NotHostedError } = await import('./commands/import.js');
  const logger = createLogger({ level: 'warn', format: config.log.format, stream: process.stderr });
  const report = await importIntoStore(config, dir, { dryRun: opts.dryRun === true, logger, ...(opts.repository ? { only: opts.repository as string[] } : {}), ...(process.stderr.isTTY ? { progressOut: process.stderr } : {}) }).catch((err: unknown) => {
    // Refusals before anything is written: the source or the configuration, not a bug (exit 2).
    if (err instanceof NotHostedError || (err instanceof Error && /not a registry:2 filesystem store/.test(err.message))) {
      process.stderr.write(`hubcache: ${err.message}\n`);
      process.exit(2);
    }
    return fail(err, 'a running hubcache owns this store: stop it, import, then start it again (hubcache import works on a stopped store)');
  });
  for (const p of report.problems) process.stderr.write(`${formatProblem(p)}\n`);
  process.stdout.write(`${formatImportSummary(report)}\n`);
  // 3: imported, but something in the source was left out (listed above).
  process.exit(report.problems.length > 0 ? 3 : 0);
});

withConfigOptions(
  program
    .command('du')
    .description('disk usage by upstream and repository: tags, manifests, blobs, bytes unique and shared, unreferenced blobs (reads the configured store, or a running server)')
    .argument('[repository]', 'only repositories starting with this, e.g. alpine, library/alp, ghcr.io/org')
    .option('--json', 'machine-readable output')
    .option('--server <url>', "a running hubcache's metrics listener (metrics.listen), e.g. http://127.0.0.1:9090"),
).action(async (filter: string | undefined, opts) => {
  const config = configOrFail(opts);
  const { diskUsage, fetchDu, formatDu, progressLine } = await import('./commands/du.js');
  process.stdout.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' ? process.exit(0) : fail(err)));
  let location: string;
  let result;
  if (opts.server) {
    location = opts.server;
    result = await fetchDu(opts.server, filter).catch((err: Error) => {
      // An answer or a connection that failed is not a bug of ours: the message, no stack.
      process.stderr.write(`hubcache: ${err instanceof TypeError ? `${opts.server}: ${(err.cause as Error)?.message ?? err.message}` : err.message}\n`);
      process.exit(1);
    });
  } else {
    // A reader, like ls: no ownership, no init(); safe next to a serving process.
    const storage = await openStorage(config.storage, { logger: createLogger({ level: 'warn', format: config.log.format, stream: process.stderr }), blockingReads: true });
    location = storage.describe().location;
    const progress = progressLine(process.stderr);
    result = await diskUsage(storage, { filter, onProgress: (p) => progress.update(p) }).catch(fail);
    progress.done();
  }
  process.stdout.write(opts.json ? `${JSON.stringify(result)}\n` : formatDu(result, { now: Date.now(), location, filter }));
});

await program.parseAsync(process.argv);
