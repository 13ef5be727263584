// Hash routes: '#/runs?e=1,2&cols=...' → {path: '/runs', segments: ['runs'], query: URLSearchParams}.
// The query part is the page's shareable state (columns, filter, sort, chosen runs, ...).

export function parse(hash = window.location.hash) {
  const raw = hash.replace(/^#/, '') || '/experiments';
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  const segments = path.split('/').filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  return { path: `/${segments.map(encodeURIComponent).join('/')}`, segments, query };
}

/** '#/path?k=v' for a path given as segments (each encoded) and a query object. */
export function href(segments, query) {
  const path = `/${segments.map((s) => encodeURIComponent(String(s))).join('/')}`;
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && !v.length)) continue;
    qs.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const s = qs.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

export function go(segments, query) {
  window.location.hash = href(segments, query);
}

/** Changes some query keys of the current route (null/'' removes a key). With replace, the
 *  browser history gets no new entry (for state such as chart settings); silent also skips
 *  the re-render (the page already shows that state). */
export function setQuery(changes, { replace = false, silent = false } = {}) {
  const cur = parse();
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && !v.length)) cur.query.delete(k);
    else cur.query.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const s = cur.query.toString();
  const next = `#${cur.path}${s ? `?${s}` : ''}`;
  if (next === window.location.hash) return;
  if (replace) {
    history.replaceState(null, '', next);
    if (!silent) window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    window.location.hash = next;
  }
}

export function list(query, key) {
  const v = query.get(key);
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : [];
}
