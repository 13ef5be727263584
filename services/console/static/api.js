// The console's JSON API client: one place that adds the bearer token, turns error bodies into
// ApiError and tells the app when the server wants a sign-in (401).

const TOKEN_KEY = 'keel.console.token';

export class ApiError extends Error {
  constructor(status, body) {
    const b = body && typeof body === 'object' ? body : {};
    super(b.message || (typeof body === 'string' && body) || `HTTP ${status}`);
    this.status = status;
    this.code = b.error_code || '';
    this.reason = b.reason || '';
    this.position = Number.isInteger(b.position) ? b.position : null;
    this.body = b;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers(extra) {
  const out = { Accept: 'application/json', ...extra };
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

export function url(path, query) {
  const u = new URL(`/api${path}`, window.location.origin);
  if (query) {
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === '') continue;
      u.searchParams.set(k, Array.isArray(v) ? v.join(',') : String(v));
    }
  }
  return u.pathname + u.search;
}

async function errorOf(resp) {
  let body = null;
  const text = await resp.text();
  try { body = JSON.parse(text); } catch { body = text; }
  const err = new ApiError(resp.status, body);
  if (resp.status === 401) window.dispatchEvent(new CustomEvent('keel:unauthorized', { detail: err }));
  return err;
}

/** A JSON request; resolves to the parsed body, rejects with ApiError. */
export async function request(method, path, { query, body, signal } = {}) {
  const init = { method, headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(url(path, query), init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { message: `The console server cannot be reached (${err.message})` });
  }
  if (!resp.ok) throw await errorOf(resp);
  if (resp.status === 204) return {};
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

/** Raw bytes (artifact previews, downloads): resolves to the Response. */
export async function raw(path, query, signal) {
  const resp = await fetch(url(path, query), { headers: headers({ Accept: '*/*' }), signal });
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

export const get = (path, query, signal) => request('GET', path, { query, signal });
export const post = (path, body) => request('POST', path, { body: body ?? {} });
export const put = (path, body) => request('PUT', path, { body: body ?? {} });
export const patch = (path, body) => request('PATCH', path, { body: body ?? {} });
export const del = (path) => request('DELETE', path);

export const enc = encodeURIComponent;

/** Saves a server file through fetch (so the bearer token goes along) as a browser download. */
export async function download(path, query, fallbackName) {
  const resp = await raw(path, query);
  const disposition = resp.headers.get('Content-Disposition') || '';
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = m ? decodeURIComponent(m[1]) : fallbackName;
  const blob = await resp.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name || 'download';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

// ---- permissions ------------------------------------------------------------------------

const LEVELS = { NONE: 0, NO_PERMISSIONS: 0, READ: 1, USE: 2, EDIT: 3, MANAGE: 4 };
let sessionInfo = { auth: false, user: null };

export function setSession(s) { sessionInfo = s || { auth: false, user: null }; }
export function session() { return sessionInfo; }

/** Whether `permission` (a resource's "permission" field) allows an action that needs `needed`.
 *  null/undefined means auth is off (everything allowed); admins may do everything. */
export function can(permission, needed) {
  if (sessionInfo.user && sessionInfo.user.is_admin) return true;
  // null: auth off, or the server did not say (it still enforces every call)
  if (permission === null || permission === undefined || permission === '') return true;
  return (LEVELS[String(permission).toUpperCase()] ?? 0) >= LEVELS[needed];
}
