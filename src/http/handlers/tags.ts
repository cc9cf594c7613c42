import type { Request, Response } from 'express';
import type { RegistryReader } from '../../cache/registry-reader.js';
import type { RepoKey } from '../../domain/reference.js';

/**
 * GET /v2/<name>/tags/list?n=&last=, with a `Link: <…>; rel="next"` header for the next page. The
 * link repeats the client's spelling of the repository, and its `ns` (containerd's registry
 * parameter) when it sent one: without it the next page would be asked of the default upstream.
 */
export async function serveTags(reader: RegistryReader, key: RepoKey, client: { name: string; ns: string | null }, page: { n?: number; last?: string }, req: Request, res: Response): Promise<void> {
  const result = await reader.listTags(key, page, { signal: req.ctx.signal, log: req.ctx.log });
  if (result.stale) {
    req.ctx.stale = result.stale.reason;
    res.setHeader('X-Hubcache-Stale', result.stale.reason);
  }
  if (result.next) {
    const params = new URLSearchParams();
    if (result.next.n !== undefined) params.set('n', String(result.next.n));
    params.set('last', result.next.last);
    if (client.ns) params.set('ns', client.ns);
    res.setHeader('Link', `</v2/${client.name}/tags/list?${params.toString()}>; rel="next"`);
  }
  // The tags come as JSON bytes already (domain/tag-list.ts): a page of a huge list is a slice,
  // never an array of strings to stringify.
  const body = Buffer.concat([Buffer.from(`{"name":${JSON.stringify(result.name)},"tags":`), result.tags.jsonArray(), Buffer.from('}')]);
  res.status(200).type('application/json').setHeader('Content-Length', body.length);
  res.end(body);
}
