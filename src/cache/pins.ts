/**
 * Pins (`cache.pin`, issue #13): images kept warm ahead of demand and never evicted.
 *
 * A `PinSet` resolves each pin to the digests it keeps — the manifest, for an index its child
 * manifests (every platform, or `cache.pinPlatforms`), and their config and layer blobs — and
 * answers `protects(digest)` in O(1) for the evictor (a count per digest, kept current as pins are
 * resolved and refreshed). It refreshes every pin on its upstream's tag TTL, through the cache's
 * normal paths (`PinSource`, implemented by `PullThroughRegistry`): a tag is revalidated like a
 * client's request (a HEAD once its TTL ran out), content not in the store is fetched by the normal
 * fill (single-flight, download slots, verification), tag patterns list the repository's tags
 * through the cache's tag-list path. At most `concurrency` of those run at once (p-limit), shared
 * by all pins.
 *
 * Protection follows content, not names: when a pinned tag moves, the new image's digests are
 * protected as soon as they are known (before they are fetched), and the old image's only once the
 * new one is complete — until then both are. A refresh that fails keeps everything it held. At
 * start the pins are first resolved from the store alone, so stored pinned content is protected
 * before the upstream is asked anything, and stays so while the upstream is down.
 */
import pLimit from 'p-limit';
import type { Digest } from '../domain/digest.js';
import { manifestRefs } from '../domain/manifest-refs.js';
import { compileTagPattern, parsePin, platformWanted, type PinSpec } from '../domain/pin.js';
import { parseRepoName, referenceString, type Reference, type RepoKey, type Tag } from '../domain/reference.js';
import type { Logger } from '../lib/logger.js';
import type { ManifestStore, MetadataStore } from '../storage/manifest-store.js';
import { imageName } from '../upstream/docker-hub.js';
import type { Schedule } from './blob-fill.js';
import { PIN_STATES, type CacheOutcome, type PinMetrics, type PinRefreshResult, type PinState } from './cache-metrics.js';
import type { ReadOptions, RegistryReader } from './registry-reader.js';

/** What the pin set asks of the cache: its normal read paths, plus fetching a blob ahead of demand. */
export interface PinSource extends Pick<RegistryReader, 'getManifest' | 'listTags'> {
  warmBlob(key: RepoKey, digest: Digest, opts: ReadOptions): Promise<'stored' | 'fetched'>;
}

export interface PinSetOptions {
  /** `cache.pin`, as configured (validated by the config; an entry that doesn't parse throws here). */
  readonly pins: readonly string[];
  /**
   * The cache's read paths, for refreshing. Absent for a pin set that only reads the store
   * (`hubcache gc` on a stopped store: `loaded()` protects what the store holds for each pin, no
   * upstream needed); `start` and `refresh` throw then.
   */
  readonly source?: PinSource;
  /** The store, read at start to protect what it holds before the upstream is asked. */
  readonly manifests: ManifestStore;
  readonly metadata: MetadataStore;
  /** Tag TTL per configured upstream: the refresh interval of its pins (5 minutes for one not listed). */
  readonly tagTtls?: ReadonlyMap<string, number>;
  /** `cache.pinConcurrency`: manifests, tag lists and blobs fetched at once, at most. */
  readonly concurrency: number;
  /** `cache.pinPlatforms`: index children kept; empty keeps all. */
  readonly platforms?: readonly string[];
  /** `cache.pinMaxTags`: a pattern matching more tags fails. */
  readonly maxTags?: number;
  readonly logger: Logger;
  /** Absent: nothing is reported (the offline `hubcache gc`). */
  readonly metrics?: PinMetrics;
  /** The refresh timers (tests call `refresh()` instead). */
  readonly schedule?: Schedule;
}

/** One image a pin keeps: a pinned tag or digest, or one tag a pattern matched. */
interface Target {
  readonly ref: Reference;
  /** Digests this target protects (each counted once in `#counts`). */
  readonly keeps: Set<Digest>;
  state: PinState;
}

interface Pin {
  readonly spec: PinSpec;
  readonly key: RepoKey;
  /** For a pattern. */
  readonly matches?: (tag: string) => boolean;
  /** Targets by reference string; a tag or digest pin has exactly one. */
  readonly targets: Map<string, Target>;
  /** Why the pin itself could not be resolved in the last refresh (a pattern's tag list), if it couldn't. */
  problem?: string;
}

/** What one refresh round found, for logs and tests. */
export interface PinRoundReport {
  readonly results: Readonly<Record<PinRefreshResult, number>>;
  readonly states: Readonly<Record<PinState, number>>;
}

const timerSchedule: Schedule = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

export class PinSet {
  readonly #o: PinSetOptions;
  readonly #pins: Pin[];
  /** How many targets keep each digest: `protects` is a lookup here. */
  readonly #counts = new Map<Digest, number>();
  readonly #limit: ReturnType<typeof pLimit>;
  readonly #stop = new AbortController();
  readonly #timers = new Set<() => void>();
  /** The round running per upstream (a second caller joins it). */
  readonly #rounds = new Map<string, Promise<PinRoundReport>>();
  #started: Promise<void> | undefined;
  #loaded: Promise<void> | undefined;

  constructor(opts: PinSetOptions) {
    this.#o = opts;
    this.#limit = pLimit(opts.concurrency);
    this.#pins = opts.pins.map((entry) => {
      const spec = parsePin(entry);
      if ('error' in spec) throw new TypeError(`cache.pin: ${spec.error}`);
      const { upstream, repo } = imageName(spec.registry, spec.path);
      const key: RepoKey = { upstream, repo: parseRepoName(repo) };
      const pin: Pin = { spec, key, targets: new Map(), ...(spec.selector.kind === 'pattern' ? { matches: compileTagPattern(spec.selector.pattern) } : {}) };
      if (spec.selector.kind === 'tag') this.#target(pin, { kind: 'tag', tag: spec.selector.tag });
      if (spec.selector.kind === 'digest') this.#target(pin, { kind: 'digest', digest: spec.selector.digest });
      return pin;
    });
  }

  #source(): PinSource {
    if (!this.#o.source) throw new TypeError('this pin set reads the store only (no source): it has nothing to refresh with');
    return this.#o.source;
  }

  /** Whether a pin keeps this blob or manifest (the evictor's `isProtected`). O(1). */
  readonly protects = (digest: Digest): boolean => this.#counts.has(digest);

  /** Digests protected now (tests, the gauge). */
  get protectedCount(): number {
    return this.#counts.size;
  }

  get size(): number {
    return this.#pins.length;
  }

  /**
   * Protects what the store holds for every pin (no upstream request), then refreshes each
   * upstream's pins at once and every tag TTL after, in the background. Resolves once the store was
   * read: pinned content stored is protected from then on.
   */
  start(): Promise<void> {
    if (!this.#o.source) return Promise.reject(new TypeError('this pin set reads the store only (no source): it has nothing to refresh with'));
    return (this.#started ??= (async () => {
      await this.loaded();
      for (const upstream of new Set(this.#pins.map((p) => p.key.upstream))) {
        const ttl = this.#o.tagTtls?.get(upstream) ?? 5 * 60_000;
        const loop = () => {
          if (this.#stop.signal.aborted) return;
          // A round reports its failures itself; nothing it throws may end the process.
          void this.#round(upstream).catch((err: unknown) => this.#o.logger.error('pin round failed', { upstream, error: (err as Error).message })).finally(() => {
            if (this.#stop.signal.aborted) return;
            // From the end of a round: every pinned tag is past its TTL at the next one (a HEAD).
            const cancel = (this.#o.schedule ?? timerSchedule)(ttl, () => {
              this.#timers.delete(cancel);
              loop();
            });
            this.#timers.add(cancel);
          });
        };
        loop();
      }
    })());
  }

  /** Stops the timers and the rounds in flight (their requests are aborted) and waits for them. */
  async stop(): Promise<void> {
    this.#stop.abort();
    for (const cancel of this.#timers) cancel();
    this.#timers.clear();
    await Promise.allSettled([...this.#rounds.values()]);
  }

  /** One refresh of every pin now (a round already running for an upstream is joined). */
  async refresh(): Promise<PinRoundReport> {
    const reports = await Promise.all([...new Set(this.#pins.map((p) => p.key.upstream))].map((u) => this.#round(u)));
    const results = zero(['fresh', 'updated', 'stale', 'failed'] as const);
    for (const r of reports) for (const k of Object.keys(results) as PinRefreshResult[]) results[k] += r.results[k];
    return { results, states: this.#states() };
  }

  /** Pin states as the gauge shows them, and which digests each target keeps (tests, `du`). */
  snapshot(): Array<{ pin: string; reference?: string; state: PinState; digests: Digest[]; problem?: string }> {
    return this.#pins.flatMap((p) => [
      ...(p.problem !== undefined ? [{ pin: p.spec.source, state: 'failed' as const, digests: [], problem: p.problem }] : []),
      ...[...p.targets.entries()].map(([ref, t]) => ({ pin: p.spec.source, reference: ref, state: t.state, digests: [...t.keeps] })),
    ]);
  }

  /**
   * Protects what the store holds for each pin: a tag's cached digest (a pattern's cached tags that
   * match), its manifests and the blobs they name — whether the blobs are stored or not (a missing
   * one is about to be fetched). No upstream request. Runs once (`start` runs it first); the
   * evictor awaits it before its first pass, so that it never removes a stored pinned image.
   */
  loaded(): Promise<void> {
    return (this.#loaded ??= this.#loadFromStore());
  }

  async #loadFromStore(): Promise<void> {
    for (const pin of this.#pins) {
      try {
        if (pin.matches) for (const tag of await this.#o.metadata.listTags(pin.key)) if (pin.matches(tag)) this.#target(pin, { kind: 'tag', tag: tag as Tag });
        for (const target of pin.targets.values()) {
          const digest = target.ref.kind === 'digest' ? target.ref.digest : (await this.#o.metadata.getTag(pin.key, target.ref.tag))?.digest;
          if (digest) await this.#walkStore(target, digest);
        }
      } catch (err) {
        this.#o.logger.warn('pin not resolved from the store', { pin: pin.spec.source, error: (err as Error).message });
      }
    }
    this.#publish();
  }

  async #walkStore(target: Target, digest: Digest): Promise<void> {
    this.#hold(target, digest);
    const stored = await this.#o.manifests.get(digest);
    if (!stored) return;
    const refs = manifestRefs(stored.body);
    for (const blob of refs.blobs) this.#hold(target, blob);
    for (const child of refs.manifests) if (platformWanted(this.#o.platforms ?? [], child.platform)) await this.#walkStore(target, child.digest);
  }

  #round(upstream: string): Promise<PinRoundReport> {
    const running = this.#rounds.get(upstream);
    if (running) return running;
    const round = this.#runRound(upstream).finally(() => this.#rounds.delete(upstream));
    this.#rounds.set(upstream, round);
    return round;
  }

  async #runRound(upstream: string): Promise<PinRoundReport> {
    const started = Date.now();
    const results = zero(['fresh', 'updated', 'stale', 'failed'] as const);
    const pins = this.#pins.filter((p) => p.key.upstream === upstream);
    await Promise.all(
      pins.map(async (pin) => {
        if (pin.matches) await this.#expand(pin);
        await Promise.all(
          [...pin.targets.values()].map(async (target) => {
            const result = await this.#refreshTarget(pin, target);
            if (this.#stop.signal.aborted) return; // shutdown, not a result
            results[result]++;
            this.#o.metrics?.pinRefreshed(result);
          }),
        );
      }),
    );
    this.#publish();
    const states = this.#states();
    if (!this.#stop.signal.aborted) this.#o.logger.info('pins refreshed', { upstream, ...states, ...prefixed('result', results), protected: this.#counts.size, ms: Date.now() - started });
    return { results, states };
  }

  /** A pattern pin's targets: the repository's tags that match, listed through the cache. */
  async #expand(pin: Pin): Promise<void> {
    const log = this.#o.logger;
    try {
      const list = await this.#limit(() => this.#source().listTags(pin.key, {}, { signal: this.#stop.signal, log }));
      const matched: string[] = [];
      for (let i = 0; i < list.tags.size; i++) if (pin.matches!(list.tags.at(i))) matched.push(list.tags.at(i));
      const max = this.#o.maxTags ?? 64;
      if (matched.length > max) {
        pin.problem = `the pattern matches ${matched.length} tags, more than cache.pinMaxTags (${max})`;
        log.warn('pin failed', { pin: pin.spec.source, error: pin.problem });
        return;
      }
      if (matched.length === 0) {
        pin.problem = 'the pattern matches no tag';
        log.warn('pin failed', { pin: pin.spec.source, error: pin.problem });
      } else pin.problem = undefined;
      const wanted = new Set(matched);
      for (const [ref, target] of pin.targets) {
        // A tag gone upstream (a stale list says nothing about that: keep them then).
        if (!list.stale && !wanted.has(ref)) {
          this.#release(target, new Set());
          pin.targets.delete(ref);
        }
      }
      for (const tag of matched) this.#target(pin, { kind: 'tag', tag: tag as Tag });
    } catch (err) {
      // The tags known so far are kept and refreshed: their stored content stays protected.
      pin.problem = `listing the tags failed: ${(err as Error).message}`;
      if (!this.#stop.signal.aborted) log.warn('pin failed', { pin: pin.spec.source, error: pin.problem });
    }
  }

  /**
   * Revalidates the target's manifest through the cache, fetches what isn't stored, and moves its
   * protection to what it resolves to now (the old digests are let go only once the new image is
   * complete).
   */
  async #refreshTarget(pin: Pin, target: Target): Promise<PinRefreshResult> {
    const signal = this.#stop.signal;
    const log = this.#o.logger;
    const now = new Set<Digest>();
    const keep = (d: Digest) => {
      now.add(d);
      this.#hold(target, d);
    };
    let changed = false;
    const seen = (outcome: CacheOutcome) => {
      if (outcome === 'miss') changed = true;
    };
    try {
      const root = await this.#limit(() => this.#source().getManifest(pin.key, target.ref, { signal, log }));
      seen(root.outcome);
      keep(root.descriptor.digest);
      const previous = [...target.keeps];
      await this.#walk(pin.key, root.body, keep, (fetched) => {
        if (fetched) changed = true;
      }, seen);
      this.#release(target, now);
      target.state = 'warm';
      const result: PinRefreshResult = root.outcome === 'stale' ? 'stale' : changed ? 'updated' : 'fresh';
      if (result === 'updated') log.info('pin updated', { pin: pin.spec.source, upstream: pin.key.upstream, repository: pin.key.repo, reference: referenceString(target.ref), digest: root.descriptor.digest, released: previous.filter((d) => !now.has(d)).length });
      return result;
    } catch (err) {
      // Everything held stays held: the old image (served stale) and what is known of the new one.
      target.state = 'failed';
      if (!signal.aborted) log.warn('pin refresh failed', { pin: pin.spec.source, upstream: pin.key.upstream, repository: pin.key.repo, reference: referenceString(target.ref), error: (err as Error).message });
      return 'failed';
    }
  }

  /** Everything `body` needs: child manifests (through the cache), then their blobs (warmed). */
  async #walk(key: RepoKey, body: Buffer, keep: (d: Digest) => void, blobDone: (fetched: boolean) => void, seen: (o: CacheOutcome) => void): Promise<void> {
    const signal = this.#stop.signal;
    const log = this.#o.logger;
    const refs = manifestRefs(body);
    const children = refs.manifests.filter((c) => platformWanted(this.#o.platforms ?? [], c.platform));
    for (const c of children) keep(c.digest);
    for (const b of refs.blobs) keep(b);
    await allOrFirstError([
      ...children.map(async (c) => {
        const m = await this.#limit(() => this.#source().getManifest(key, { kind: 'digest', digest: c.digest }, { signal, log }));
        seen(m.outcome);
        await this.#walk(key, m.body, keep, blobDone, seen);
      }),
      ...refs.blobs.map(async (b) => blobDone((await this.#limit(() => this.#source().warmBlob(key, b, { signal, log }))) === 'fetched')),
    ]);
  }

  #target(pin: Pin, ref: Reference): Target {
    const id = referenceString(ref);
    let target = pin.targets.get(id);
    if (!target) {
      target = { ref, keeps: new Set(), state: 'cold' };
      pin.targets.set(id, target);
    }
    return target;
  }

  #hold(target: Target, digest: Digest): void {
    if (target.keeps.has(digest)) return;
    target.keeps.add(digest);
    this.#counts.set(digest, (this.#counts.get(digest) ?? 0) + 1);
  }

  /** Lets go of every digest the target keeps except `except`. */
  #release(target: Target, except: ReadonlySet<Digest>): void {
    for (const digest of target.keeps) {
      if (except.has(digest)) continue;
      target.keeps.delete(digest);
      const n = (this.#counts.get(digest) ?? 1) - 1;
      if (n > 0) this.#counts.set(digest, n);
      else this.#counts.delete(digest);
    }
  }

  #states(): Record<PinState, number> {
    const states = zero(PIN_STATES);
    for (const pin of this.#pins) {
      if (pin.problem !== undefined) states.failed++;
      for (const t of pin.targets.values()) states[t.state]++;
    }
    return states;
  }

  #publish(): void {
    this.#o.metrics?.pinStates(this.#states());
    this.#o.metrics?.pinnedDigests(this.#counts.size);
  }
}

function zero<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

function prefixed(prefix: string, o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${prefix}_${k}`, v]));
}

/** Waits for every promise (nothing is left running), then rejects with the first failure, if any. */
async function allOrFirstError(promises: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}
