// The run page's artifact browser: a lazily loaded tree, previews of text, JSON, YAML, CSV (as a
// table), images and MLmodel (with its signature), downloads of a file or a folder (zip), and
// registering a model from a folder that holds an MLmodel file.
import * as api from './api.js';
import { h, mount, fmtBytes, busy, showError, toast } from './dom.js';
import { href } from './router.js';
import { parseYaml, parseCsv, signatureView } from './mlmodel.js';

const IMAGE = /\.(png|jpe?g|gif|svg|webp|bmp)$/i;
const TEXT = /\.(txt|log|md|py|r|sh|cfg|ini|toml|requirements|in|lock|html|xml|sql|ipynb|js|ts|java|scala|go|rs|c|h|cpp|tex|rst)$/i;
const YAML = /\.(ya?ml)$/i;
const JSONX = /\.(json|jsonl|geojson)$/i;
const CSV = /\.(csv|tsv)$/i;

const base = (p) => p.split('/').filter(Boolean).pop() || p;

export function artifactBrowser({ runId }) {
  const enc = api.enc;
  const tree = h('div', { class: 'artifact-tree', 'data-testid': 'artifact-tree' });
  const preview = h('div', { class: 'artifact-preview', 'data-testid': 'artifact-preview' },
    h('p', { class: 'muted' }, 'Choose a file or folder to preview it.'));
  const root = h('div', { class: 'artifacts', 'data-testid': 'artifact-browser' }, tree, preview);
  let selectedEntry = null;
  let previewSeq = 0;
  let modelNames = null;

  async function list(path) {
    const data = await api.get(`/runs/${enc(runId)}/artifacts`, { path });
    const files = (data.files || []).slice();
    files.sort((a, b) => (b.is_dir - a.is_dir) || a.path.localeCompare(b.path));
    return files;
  }

  function entry(f, depth) {
    const li = h('li');
    const icon = h('span', { class: 'icon' }, f.is_dir ? '▸' : '·');
    const row = h('div', {
      class: 'artifact-entry', 'data-testid': 'artifact-entry', 'data-path': f.path, 'data-dir': f.is_dir ? '1' : '0', role: 'treeitem', tabindex: '0',
      title: f.path,
    }, icon, h('span', null, base(f.path)), f.is_dir ? null : h('span', { class: 'size' }, fmtBytes(f.file_size)));
    li.appendChild(row);
    let children = null;
    const open = async () => {
      if (selectedEntry) selectedEntry.classList.remove('selected');
      row.classList.add('selected');
      selectedEntry = row;
      if (f.is_dir) {
        if (children) {
          children.remove();
          children = null;
          icon.textContent = '▸';
        } else {
          icon.textContent = '▾';
          children = h('ul', { role: 'group' }, h('li', { class: 'muted small', style: { padding: '2px 8px' } }, 'Loading…'));
          li.appendChild(children);
          try {
            const files = await list(f.path);
            mount(children, files.length ? files.map((c) => entry(c, depth + 1)) : h('li', { class: 'muted small', style: { padding: '2px 8px' } }, 'Empty folder'));
          } catch (err) {
            mount(children, h('li', { class: 'muted small' }, 'Could not list this folder.'));
            showError(err);
          }
        }
        showFolder(f);
      } else {
        showFile(f);
      }
    };
    row.addEventListener('click', open);
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
    return li;
  }

  function downloadButton(f) {
    return h('button', {
      'data-testid': 'artifact-download', 'data-path': f.path,
      onclick: (e) => busy(e.currentTarget, () => api.download(`/runs/${enc(runId)}/download`, { path: f.path }, f.is_dir ? `${base(f.path)}.zip` : base(f.path))),
    }, f.is_dir ? '⤓ Download folder (.zip)' : '⤓ Download');
  }

  function head(f, extra) {
    return h('div', { class: 'preview-head' },
      h('span', { class: 'path', 'data-testid': 'preview-path' }, f.path || '/'),
      f.is_dir ? null : h('span', { class: 'muted small' }, fmtBytes(f.file_size)),
      h('span', { class: 'actions' }, extra, downloadButton(f)));
  }

  async function showFolder(f) {
    const mine = ++previewSeq;
    mount(preview, head(f), h('p', { class: 'muted' }, 'Loading…'));
    let files;
    try { files = await list(f.path); } catch (err) { if (mine === previewSeq) showError(err); return; }
    if (mine !== previewSeq) return;
    const mlmodel = files.find((c) => !c.is_dir && base(c.path) === 'MLmodel');
    const registerBtn = mlmodel ? h('button', { class: 'primary', 'data-testid': 'register-model', onclick: () => registerForm(f.path) }, 'Register model') : null;
    const body = [head(f, registerBtn)];
    const formSlot = h('div');
    body.push(formSlot);
    if (mlmodel) {
      body.push(h('div', { class: 'note ok' }, 'This folder is an MLflow-format model.'));
      const mlSlot = h('div');
      body.push(mlSlot);
      loadText(mlmodel).then((r) => { if (mine === previewSeq && r) mount(mlSlot, mlmodelView(r.text)); });
    }
    body.push(h('h3', { style: { marginTop: '16px' } }, `Files (${files.length})`), h('table', { class: 'data', 'data-testid': 'folder-listing' },
      h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', { class: 'num' }, 'Size'))),
      h('tbody', null, files.length ? files.map((c) => h('tr', null, h('td', null, c.is_dir ? `${base(c.path)}/` : base(c.path)), h('td', { class: 'num' }, c.is_dir ? '' : fmtBytes(c.file_size))))
        : h('tr', null, h('td', { colspan: 2, class: 'empty' }, 'Empty folder')))));
    mount(preview, ...body);

    function registerForm(path) {
      const name = h('input', { type: 'text', placeholder: 'Model name', list: 'keel-model-names', 'data-testid': 'register-model-name', 'aria-label': 'Model name' });
      const submit = h('button', { class: 'primary', type: 'submit', 'data-testid': 'register-model-submit' }, 'Register');
      const result = h('span', { 'data-testid': 'register-result' });
      const datalist = h('datalist', { id: 'keel-model-names' });
      mount(formSlot, h('form', {
        class: 'register-form', 'data-testid': 'register-model-form',
        onsubmit: (e) => {
          e.preventDefault();
          const n = name.value.trim();
          if (!n) { name.focus(); return; }
          busy(submit, async () => {
            const v = await api.post('/models', { name: n, run_id: runId, path });
            mount(result, 'Registered ', h('a', { href: href(['models', v.name, v.version]), 'data-testid': 'registered-version-link' }, `${v.name} version ${v.version}`));
            toast(`Registered ${v.name} version ${v.version}`);
          });
        },
      }, h('span', null, 'Register ', h('code', null, `runs:/${runId}/${path}`), ' as'), name, datalist, submit, result));
      name.focus();
      if (modelNames === null) {
        api.get('/models', { page_size: 200 }).then((d) => {
          modelNames = (d.models || []).map((m) => m.name);
          mount(datalist, modelNames.map((m) => h('option', { value: m })));
        }).catch(() => { modelNames = []; });
      } else {
        mount(datalist, modelNames.map((m) => h('option', { value: m })));
      }
    }
  }

  async function loadText(f) {
    try {
      const resp = await api.raw(`/runs/${enc(runId)}/artifact`, { path: f.path, preview: 1 });
      return { text: await resp.text(), truncated: resp.headers.get('X-Keel-Truncated') === '1', type: resp.headers.get('Content-Type') || '' };
    } catch (err) {
      showError(err);
      return null;
    }
  }

  async function showFile(f) {
    const mine = ++previewSeq;
    mount(preview, head(f), h('p', { class: 'muted' }, 'Loading…'));
    const name = base(f.path);
    if (IMAGE.test(name)) {
      try {
        const resp = await api.raw(`/runs/${enc(runId)}/artifact`, { path: f.path, preview: 1 });
        const truncated = resp.headers.get('X-Keel-Truncated') === '1';
        if (truncated) {
          if (mine === previewSeq) mount(preview, head(f), h('p', { class: 'note warn' }, 'This image is larger than the 1 MiB preview limit: download it to view.'));
          return;
        }
        const blob = await resp.blob();
        if (mine !== previewSeq) return;
        const src = URL.createObjectURL(blob);
        const img = h('img', { src, alt: name, 'data-testid': 'preview-image' });
        img.addEventListener('load', () => URL.revokeObjectURL(src), { once: true });
        mount(preview, head(f), img);
      } catch (err) { showError(err); }
      return;
    }
    const r = await loadText(f);
    if (!r || mine !== previewSeq) return;
    const note = r.truncated ? h('p', { class: 'note warn', 'data-testid': 'preview-truncated' }, 'Showing the first 1 MiB: download the file for all of it.') : null;
    let body;
    if (/\0/.test(r.text.slice(0, 2000)) && !TEXT.test(name)) {
      body = h('p', { class: 'muted', 'data-testid': 'preview-binary' }, 'A binary file: no preview. Download it instead.');
    } else if (name === 'MLmodel') {
      body = mlmodelView(r.text);
    } else if (JSONX.test(name) || r.type.includes('json')) {
      body = jsonView(r.text, r.truncated);
    } else if (CSV.test(name) || r.type.includes('csv')) {
      body = csvView(r.text, /\.tsv$/i.test(name) ? '\t' : ',');
    } else if (YAML.test(name) || r.type.includes('yaml')) {
      body = h('pre', { 'data-testid': 'preview-yaml' }, r.text);
    } else {
      body = h('pre', { 'data-testid': 'preview-text' }, r.text);
    }
    mount(preview, head(f), note, body);
  }

  async function start() {
    try {
      const files = await list('');
      root.classList.toggle('has-files', files.length > 0);
      if (!files.length) mount(preview);
      mount(tree, files.length
        ? h('ul', { role: 'tree' }, files.map((f) => entry(f, 0)))
        : h('p', { class: 'muted', style: { padding: '8px 12px' }, 'data-testid': 'artifacts-empty' }, 'No artifacts.'));
    } catch (err) {
      mount(tree, h('p', { class: 'muted', style: { padding: '8px 12px' } }, 'Artifacts could not be listed.'));
      if (err.status !== 404) showError(err, 'Artifacts');
    }
  }
  start();
  return root;
}

function jsonView(text, truncated) {
  if (!truncated) {
    try {
      return h('pre', { 'data-testid': 'preview-json' }, JSON.stringify(JSON.parse(text), null, 2));
    } catch { /* JSON lines or not JSON at all: show the text */ }
  }
  return h('pre', { 'data-testid': 'preview-json' }, text);
}

function csvView(text, delimiter) {
  const { rows, more } = parseCsv(text, delimiter, 1001);
  if (!rows.length) return h('p', { class: 'muted' }, 'Empty file.');
  const [header, ...body] = rows;
  const isNum = (c) => /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(c);
  const numeric = header.map((_, i) => body.length > 0 && body.every((r) => r[i] === undefined || r[i] === '' || isNum(r[i])));
  return h('div', null,
    h('div', { class: 'table-wrap', style: { maxHeight: '520px' } },
      h('table', { class: 'data', 'data-testid': 'preview-csv' },
        h('thead', null, h('tr', null, header.map((c, i) => h('th', { class: numeric[i] ? 'num' : '' }, c)))),
        h('tbody', null, body.map((r) => h('tr', null, r.map((c, i) => h('td', { class: numeric[i] ? 'num' : '' }, c))))))),
    h('p', { class: 'muted small' }, `${body.length} row${body.length === 1 ? '' : 's'}${more ? ' shown (more in the file)' : ''} · ${header.length} columns`));
}

/** MLmodel: flavors, facts and the signature, with the raw file below. */
export function mlmodelView(text) {
  let doc = null;
  try { doc = parseYaml(text); } catch { doc = null; }
  const raw = h('details', null, h('summary', { class: 'muted small' }, 'MLmodel file'), h('pre', { 'data-testid': 'preview-text' }, text));
  if (!doc || typeof doc !== 'object') return h('div', null, h('pre', { 'data-testid': 'preview-text' }, text));
  const flavors = doc.flavors && typeof doc.flavors === 'object' ? Object.keys(doc.flavors) : [];
  const facts = [
    ['Flavors', flavors.length ? flavors.map((f) => h('span', { class: 'chip' }, f)) : '—'],
    ['Run', doc.run_id || '—'],
    ['Artifact path', doc.artifact_path || '—'],
    ['Created', doc.utc_time_created || '—'],
    ['Model UUID', doc.model_uuid || '—'],
  ];
  if (doc.model_size_bytes) facts.push(['Size', fmtBytes(Number(doc.model_size_bytes))]);
  const py = doc.flavors && doc.flavors.python_function;
  if (py && py.loader_module) facts.push(['Loader', py.loader_module]);
  return h('div', { 'data-testid': 'preview-mlmodel' },
    h('dl', { class: 'kv', style: { marginBottom: '14px' } }, facts.map(([k, v]) => [h('dt', null, k), h('dd', { class: k === 'Run' || k === 'Model UUID' ? 'mono' : '' }, v)])),
    h('h2', null, 'Signature'),
    signatureView(doc.signature || null),
    doc.saved_input_example_info ? h('p', { class: 'muted small' }, `Input example: ${doc.saved_input_example_info.artifact_path || 'logged'}`) : null,
    raw);
}

