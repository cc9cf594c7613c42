/**
 * What the filesystem store's manifests reference, one file per partition: `manifest-refs/<ab>`,
 * lines `<hex> i <JSON array>` (an index: its children's digests, `null` for a malformed one) or
 * `<hex> b <JSON array>` (an image manifest: its blob references), for the manifests of
 * `manifests/sha256/<ab>/` (issue #13: `hubcache du`/`ls` at 100k blobs learn what 25k manifests
 * reference from 256 small files instead of opening 50k files and parsing 25k documents twice).
 *
 * A hint derived from the manifests, never the truth about which manifests exist: readers take the
 * stored manifests from `readdir` of the partition (a body and its `.json` sidecar) and only their
 * references from here (a manifest's references never change: its name is its content's hash, and
 * `domain/manifest-refs.ts` `listingRefs` reads them from the body alone), and read and parse a
 * manifest without a line. So nothing has to be exact: `FsManifestStore.put` appends the line after
 * the body's rename (no fsync; a crash in between costs one read later), a delete (eviction, gc,
 * hosted deletes) writes nothing (the name is gone from `readdir`, the stale line is ignored and
 * dropped at the next rewrite), and a torn or malformed line is skipped. The store's owner checks
 * every partition in the background after its start (`FsManifestStore.maintainRefs`) and rewrites
 * a partition's file (in `tmp/`, renamed over it) when it lacked a stored manifest or held lines of
 * manifests that are gone, and again after every 1024 appends to a partition, so the file stays
 * within its live lines plus 1024. A put racing a rewrite may lose its line: one read later.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Digest } from '../../domain/digest.js';
import { isDigest } from '../../domain/digest.js';
import type { ListingRefs } from '../../domain/manifest-refs.js';
import { isNotFound } from './fs-util.js';

const HEX64_RE = /^[a-f0-9]{64}$/;

/** The line of manifest `hex` (with its newline). */
export function formatRefsLine(hex: string, refs: ListingRefs): string {
  return refs.index ? `${hex} i ${JSON.stringify(refs.children)}\n` : `${hex} b ${JSON.stringify(refs.blobs)}\n`;
}

/**
 * Hex → the rest of its line (`i [...]` / `b [...]`, not parsed: a walk parses the lines it needs,
 * `parseRefs`), the last line of a hex winning; lines that don't start with a hex and a kind are
 * skipped, as is a last line without its newline (a torn append). `lines` counts every line, for
 * the rewrite decision.
 */
export function parseRefsFile(text: string): { refs: Map<string, string>; lines: number } {
  const refs = new Map<string, string>();
  let lines = 0;
  let start = 0;
  while (start < text.length) {
    const end = text.indexOf('\n', start);
    if (end === -1) break;
    lines++;
    if (end - start > 67 && text.charCodeAt(start + 64) === 32 && text.charCodeAt(start + 66) === 32) {
      const hex = text.slice(start, start + 64);
      if (HEX64_RE.test(hex)) refs.set(hex, text.slice(start + 65, end));
    }
    start = end + 1;
  }
  return { refs, lines };
}

/** A line's rest (`parseRefsFile`) as references, or `undefined` when it is malformed (the manifest is then read). */
export function parseRefs(rest: string): ListingRefs | undefined {
  let list: unknown;
  try {
    list = JSON.parse(rest.slice(2));
  } catch {
    return undefined;
  }
  if (!Array.isArray(list)) return undefined;
  if (rest.startsWith('i ')) {
    return list.every((c) => c === null || (typeof c === 'string' && isDigest(c))) ? { index: true, children: list as Array<Digest | null> } : undefined;
  }
  if (rest.startsWith('b ')) return list.every((r) => typeof r === 'string') ? { index: false, blobs: list as string[] } : undefined;
  return undefined;
}

/** The partition's refs file, parsed; empty when missing or unreadable (it is a hint). */
export async function readRefsFile(path: string, blocking: boolean): Promise<{ refs: Map<string, string>; lines: number }> {
  try {
    return parseRefsFile(blocking ? readFileSync(path, 'utf8') : await readFile(path, 'utf8'));
  } catch (err) {
    return { refs: new Map(), lines: isNotFound(err) ? 0 : 1 };
  }
}

/**
 * The stored manifests of one partition from its directory listing: a body (`<hex>`, in its
 * partition) whose sidecar (`<hex>.json`) is there too.
 */
export function storedInPartition(prefix: string, names: readonly string[]): string[] {
  const all = new Set(names);
  return names.filter((n) => n.length === 64 && n.startsWith(prefix) && HEX64_RE.test(n) && all.has(`${n}.json`));
}
