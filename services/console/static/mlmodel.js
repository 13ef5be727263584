// Reading what the artifact browser previews: a small YAML reader (enough for MLmodel,
// conda.yaml and python_env.yaml as PyYAML writes them), a CSV reader, and the signature table
// shared by the artifact preview and the model version page.
import { h } from './dom.js';

function scalar(s) {
  const t = s.trim();
  if (t === '' || t === '~' || t === 'null' || t === 'Null' || t === 'NULL') return null;
  if (t === 'true' || t === 'True') return true;
  if (t === 'false' || t === 'False') return false;
  if (t.startsWith("'") && t.endsWith("'") && t.length >= 2) return t.slice(1, -1).replaceAll("''", "'");
  if (t.startsWith('"') && t.endsWith('"') && t.length >= 2) {
    try { return JSON.parse(t); } catch { return t.slice(1, -1); }
  }
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t)) return Number(t);
  if ((t.startsWith('[') && t.endsWith(']')) || (t.startsWith('{') && t.endsWith('}'))) {
    try { return JSON.parse(t); } catch { /* a flow collection that is not JSON: keep the text */ }
    if (t === '[]') return [];
    if (t === '{}') return {};
  }
  return t;
}

function splitKey(text) {
  // "key: value" or "key:" with the key possibly quoted; null when the line is not a mapping entry
  let key;
  let rest;
  if (text[0] === "'" || text[0] === '"') {
    const q = text[0];
    let j = 1;
    while (j < text.length) {
      if (text[j] === q) { if (q === "'" && text[j + 1] === "'") { j += 2; continue; } break; }
      if (q === '"' && text[j] === '\\') j += 1;
      j += 1;
    }
    if (text[j + 1] !== ':') return null;
    key = scalar(text.slice(0, j + 1));
    rest = text.slice(j + 2);
  } else {
    const m = /^(.*?):(?:\s+|$)/.exec(text);
    if (!m || !m[1].trim()) return null;
    key = m[1].trim();
    rest = text.slice(m[0].length);
  }
  return { key: String(key), rest: rest.trim() };
}

/** Parses the block-style YAML subset PyYAML's safe_dump writes. Throws on anything else. */
export function parseYaml(text) {
  const lines = [];
  for (const raw of text.split(/\r?\n/)) {
    const trimmed = raw.trim();
    if (!trimmed || trimmed.startsWith('#') || trimmed === '---') continue;
    lines.push({ indent: raw.length - raw.trimStart().length, text: trimmed });
  }
  let i = 0;
  const isItem = (l) => l.text === '-' || l.text.startsWith('- ');

  function block(indent) {
    return isItem(lines[i]) ? seq(indent) : map(indent);
  }

  function continuation(indent, first) {
    if (first === '|' || first === '|-' || first === '>' || first === '>-') {
      const parts = [];
      while (i < lines.length && lines[i].indent > indent) { parts.push(lines[i].text); i += 1; }
      return parts.join(first.startsWith('|') ? '\n' : ' ');
    }
    let s = first;
    while (i < lines.length && lines[i].indent > indent) { s += ` ${lines[i].text}`; i += 1; }
    return scalar(s);
  }

  function map(indent) {
    const obj = {};
    while (i < lines.length && lines[i].indent === indent && !isItem(lines[i])) {
      const kv = splitKey(lines[i].text);
      if (!kv) throw new Error(`not YAML this reader knows: "${lines[i].text}"`);
      i += 1;
      if (kv.rest === '') {
        const next = lines[i];
        obj[kv.key] = next && (next.indent > indent || (next.indent === indent && isItem(next))) ? block(next.indent) : null;
      } else {
        obj[kv.key] = continuation(indent, kv.rest);
      }
    }
    if (i < lines.length && lines[i].indent > indent) throw new Error(`unexpected indentation: "${lines[i].text}"`);
    return obj;
  }

  function seq(indent) {
    const arr = [];
    while (i < lines.length && lines[i].indent === indent && isItem(lines[i])) {
      const rest = lines[i].text.slice(1).trim();
      if (!rest) {
        i += 1;
        arr.push(i < lines.length && lines[i].indent > indent ? block(lines[i].indent) : null);
      } else if (!/^['"[{]/.test(rest) && splitKey(rest)) {
        lines[i] = { indent: indent + 2, text: rest }; // "- key: v": a mapping whose keys sit 2 deeper
        arr.push(map(indent + 2));
      } else {
        i += 1;
        arr.push(continuation(indent, rest));
      }
    }
    return arr;
  }

  if (!lines.length) return null;
  const out = block(lines[0].indent);
  if (i < lines.length) throw new Error(`unexpected line: "${lines[i].text}"`);
  return out;
}

/** RFC 4180 CSV (quotes, doubled quotes, newlines inside quotes); at most maxRows rows. */
export function parseCsv(text, delimiter = ',', maxRows = 1000) {
  const rows = [];
  let row = [];
  let field = '';
  let inQuotes = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (inQuotes) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
        inQuotes = false; i += 1; continue;
      }
      field += c; i += 1; continue;
    }
    if (c === '"' && field === '') { inQuotes = true; i += 1; continue; }
    if (c === delimiter) { row.push(field); field = ''; i += 1; continue; }
    if (c === '\r' || c === '\n') {
      row.push(field); field = '';
      rows.push(row); row = [];
      if (rows.length >= maxRows) return { rows, more: true };
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      i += 1; continue;
    }
    field += c; i += 1;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return { rows, more: false };
}

/** A signature part: a list of column/tensor specs, or the JSON string MLmodel stores. */
function specs(part) {
  if (part === null || part === undefined || part === '') return null;
  if (typeof part === 'string') {
    try { return JSON.parse(part); } catch { return [{ name: part, type: '' }]; }
  }
  return Array.isArray(part) ? part : [part];
}

function specType(s) {
  if (s.type === 'tensor' || s['tensor-spec']) {
    const t = s['tensor-spec'] || {};
    return `tensor ${t.dtype || ''}`.trim();
  }
  if (s.type === 'array' && s.items) return `array<${s.items.type || '?'}>`;
  return s.type || '';
}

function specShape(s) {
  const t = s['tensor-spec'];
  if (t && Array.isArray(t.shape)) return `(${t.shape.join(', ')})`;
  return '';
}

/** Tables of a signature's inputs and outputs (and params when present). */
export function signatureView(sig) {
  if (!sig || (!sig.inputs && !sig.outputs)) {
    return h('p', { class: 'muted', 'data-testid': 'signature-none' }, 'No signature was logged with this model.');
  }
  const part = (label, list) => {
    const rows = specs(list);
    if (!rows) return null;
    return h('div', null, h('h3', null, label),
      h('table', { class: 'data', 'data-testid': `signature-${label.toLowerCase()}` },
        h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Type'), h('th', null, 'Shape'), h('th', null, 'Required'))),
        h('tbody', null, rows.map((s, idx) => h('tr', { 'data-testid': 'signature-field' },
          h('td', { class: 'mono' }, s.name ?? h('span', { class: 'muted' }, `#${idx}`)),
          h('td', { class: 'mono' }, specType(s)),
          h('td', { class: 'mono' }, specShape(s)),
          h('td', null, s.required === false ? 'no' : 'yes'))))));
  };
  return h('div', { class: 'grid2', 'data-testid': 'signature' },
    part('Inputs', sig.inputs), part('Outputs', sig.outputs), sig.params ? part('Params', sig.params) : null);
}
