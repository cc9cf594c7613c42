/**
 * The `Link: <…>; rel="next"` header of a paginated tag list (distribution spec, "Listing Tags";
 * RFC 8288 syntax). Only `last` and `n` of the target matter: the next page is asked for with our
 * own URL, never by following the upstream's link blindly.
 */
export function parseNextLink(header: string | undefined): { n?: number; last: string } | undefined {
  if (!header) return undefined;
  for (const m of header.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]*)*)/g)) {
    const params = m[2]!;
    const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(params);
    const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
    if (!rels.includes('next')) continue;
    let target: URL;
    try {
      target = new URL(m[1]!, 'http://relative.invalid');
    } catch {
      return undefined;
    }
    const last = target.searchParams.get('last');
    if (!last) return undefined;
    const n = Number(target.searchParams.get('n'));
    return Number.isSafeInteger(n) && n > 0 ? { n, last } : { last };
  }
  return undefined;
}
