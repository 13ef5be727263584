// Small DOM and formatting helpers shared by every page (no framework: plain elements).

/** h('div', {class: 'x', 'data-testid': 'y', onclick: fn}, child, [children], 'text') */
export function h(tag, attrs, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value' && !svg) el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'indeterminate') el[k] = !!v;
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(['svg', 'g', 'path', 'line', 'polyline', 'polygon', 'circle', 'rect', 'text', 'title', 'tspan', 'defs', 'linearGradient', 'stop', 'clipPath']);

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replaces el's content with children. */
export function mount(el, ...children) {
  clear(el);
  return append(el, children);
}

// ---- formatting -------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(ms) {
  if (ms === null || ms === undefined || ms === '' || Number(ms) <= 0) return '—';
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return `${hh}h ${m % 60}m`;
  return `${Math.floor(hh / 24)}d ${hh % 24}h`;
}

/** A number in at most 6 significant digits, without trailing zeros. */
export function fmtNum(v) {
  if (v === null || v === undefined || v === '') return '';
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a >= 1e6 || a < 1e-4) return n.toExponential(3).replace(/\.?0+e/, 'e');
  return String(Number(n.toPrecision(6)));
}

export function fmtBytes(n) {
  if (n === null || n === undefined || n < 0) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || text || ''}` }, text || '—');
}

export function shortId(id) {
  return id && id.length > 12 ? id.slice(0, 8) : id;
}

// ---- feedback: banner, toasts, confirmation ---------------------------------------------

/** Shows an error (an ApiError or any Error) above the page; 403 shows the server's message. */
export function showError(err, prefix) {
  const area = document.getElementById('banner');
  let text = err && err.message ? err.message : String(err);
  if (err && err.status === 403) text = `Permission denied: ${text}`;
  if (prefix) text = `${prefix}: ${text}`;
  const banner = h('div', { class: 'banner', role: 'alert', 'data-testid': 'error-banner' },
    h('span', { 'data-testid': 'error-message' }, text),
    h('button', { class: 'link close', 'aria-label': 'Dismiss', onclick: () => banner.remove() }, '✕'));
  area.appendChild(banner);
  return banner;
}

export function clearErrors() {
  clear(document.getElementById('banner'));
}

export function toast(text, kind) {
  const box = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind || ''}`, 'data-testid': 'toast', role: 'status' }, text);
  box.appendChild(t);
  setTimeout(() => t.remove(), 5000);
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog(message, { ok = 'Confirm', danger = false, title = 'Please confirm' } = {}) {
  return new Promise((resolve) => {
    const finish = (answer) => { dlg.close(); dlg.remove(); resolve(answer); };
    const dlg = h('dialog', { 'data-testid': 'confirm-dialog' },
      h('h2', null, title),
      h('div', { 'data-testid': 'confirm-message' }, message),
      h('div', { class: 'dialog-actions' },
        h('button', { 'data-testid': 'confirm-cancel', onclick: () => finish(false) }, 'Cancel'),
        h('button', { class: danger ? 'danger solid' : 'primary', 'data-testid': 'confirm-ok', onclick: () => finish(true) }, ok)));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); finish(false); });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

/** Runs an async action with the button disabled; errors go to the banner. */
export async function busy(button, action) {
  const was = button.disabled;
  button.disabled = true;
  try {
    return await action();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    button.disabled = was;
  }
}

export function debounce(fn, ms) {
  let t = 0;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

/** A stable colour for series i (readable on white, distinct for up to 10). */
export const PALETTE = ['#2f6fd6', '#e0663a', '#2e9d5b', '#b5479f', '#c9a227', '#1aa3b8', '#7b58c8', '#d23f57', '#6c7a89', '#8a6d3b'];
export const color = (i) => PALETTE[i % PALETTE.length];
