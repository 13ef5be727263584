// #/runs?e=1,2&cols=metrics.rmse:last,params.lr&filter=...&sort=metrics.rmse DESC&view=active
// The runs of one or more experiments: chosen columns kept in the URL, a filter in keel's search
// syntax (errors shown at their position), sorting by any sortable column, server-side paging,
// and selection for compare/delete.
import * as api from './api.js';
import { h, mount, clear, fmtTime, fmtDuration, fmtNum, badge, busy, confirmDialog, toast, showError, shortId } from './dom.js';
import { href, setQuery, go, list } from './router.js';

const PAGE_SIZE = 50;
const AGGS = ['last', 'min', 'max'];

// Built-in columns: id, header, sort key (null: not sortable), cell.
const BASE_COLUMNS = [
  { id: 'attributes.run_name', label: 'Run', sort: 'attributes.run_name' },
  { id: 'attributes.status', label: 'Status', sort: 'attributes.status' },
  { id: 'attributes.start_time', label: 'Started', sort: 'attributes.start_time' },
  { id: 'duration', label: 'Duration', sort: null },
  { id: 'attributes.user_id', label: 'User', sort: 'attributes.user_id' },
];

/** "metrics.rmse:min" → {id, kind: 'metrics', key: 'rmse', agg: 'min'}; params./tags. likewise. */
export function parseColumn(spec) {
  const dot = spec.indexOf('.');
  if (dot < 0) return null;
  const kind = spec.slice(0, dot);
  let key = spec.slice(dot + 1);
  if (!key || !['metrics', 'params', 'tags'].includes(kind)) return null;
  let agg = null;
  if (kind === 'metrics') {
    const m = /:(last|min|max)$/.exec(key);
    agg = m ? m[1] : 'last';
    if (m) key = key.slice(0, -m[0].length);
  }
  return { id: kind === 'metrics' ? `metrics.${key}:${agg}` : `${kind}.${key}`, kind, key, agg };
}

/** An identifier in keel's search syntax: plain when it can be, else back-quoted. */
export function ident(kind, key) {
  return /^[A-Za-z_][A-Za-z0-9_.]*$/.test(key) ? `${kind}.${key}` : `${kind}.\`${key}\``;
}

function sortKeyOf(col) {
  if (col.kind === 'metrics') return col.agg === 'last' ? ident('metrics', col.key) : null;
  return ident(col.kind, col.key);
}

const colsKey = (ids) => `keel.console.cols:${[...ids].sort().join(',')}`;

function parseSort(s) {
  const m = /^(.*?)(?:\s+(ASC|DESC))?$/i.exec((s || '').trim());
  return m && m[1] ? { key: m[1], dir: (m[2] || 'ASC').toUpperCase() } : null;
}

export async function render({ el, query }) {
  let state = readState(query);
  let tokens = [''];
  let page = 0;
  let rows = [];
  let nextToken = '';
  let known = { params: [], metrics: [], tags: [] };
  let experiments = [];
  const selected = new Set();
  let loadSeq = 0;

  function readState(q) {
    return {
      e: list(q, 'e'),
      cols: list(q, 'cols').map(parseColumn).filter(Boolean),
      filter: q.get('filter') || '',
      sort: q.get('sort') || '',
      view: q.get('view') || 'active',
    };
  }

  // the last columns chosen for these experiments come back when the URL names none
  function withSavedCols(q) {
    const ids = list(q, 'e');
    if (!ids.length || q.has('cols')) return q;
    let saved = '';
    try { saved = localStorage.getItem(colsKey(ids)) || ''; } catch { /* storage off */ }
    if (!saved) return q;
    setQuery({ cols: saved }, { replace: true, silent: true });
    const out = new URLSearchParams(q);
    out.set('cols', saved);
    return out;
  }
  state = readState(withSavedCols(query));

  if (!state.e.length) {
    mount(el, h('div', { class: 'panel' }, h('h1', null, 'Runs'),
      h('p', null, 'Choose one or more experiments on the ', h('a', { href: '#/experiments' }, 'experiments page'), ' to see their runs.')));
    return {};
  }

  // ---- static parts ----------------------------------------------------------------------
  const title = h('h1', { 'data-testid': 'runs-title' }, 'Runs');
  const sub = h('div', { class: 'sub' });
  const filterInput = h('input', {
    type: 'search', class: 'filter-input', value: state.filter, spellcheck: 'false', autocomplete: 'off',
    placeholder: "metrics.rmse < 0.8 and (params.model = 'cnn' or tags.team LIKE 'vis%')",
    'data-testid': 'runs-filter', 'aria-label': 'Filter runs',
  });
  const filterError = h('div', { class: 'filter-error hidden', 'data-testid': 'filter-error', role: 'alert' });
  const viewSelect = h('select', { 'data-testid': 'runs-view', 'aria-label': 'Which runs', onchange: (e) => setQuery({ view: e.target.value === 'active' ? '' : e.target.value }) },
    ['active', 'deleted', 'all'].map((v) => h('option', { value: v, selected: v === state.view }, v[0].toUpperCase() + v.slice(1))));
  const columnsBtn = h('button', { 'data-testid': 'columns-button', 'aria-haspopup': 'true', onclick: (e) => { e.stopPropagation(); togglePicker(); } }, 'Columns');
  const picker = h('div', { class: 'popover hidden', 'data-testid': 'column-picker', onclick: (e) => e.stopPropagation() });
  const compareBtn = h('button', { class: 'primary', 'data-testid': 'compare-selected', disabled: true, onclick: () => go(['compare'], { runs: [...selected] }) }, 'Compare');
  const deleteBtn = h('button', { class: 'danger', 'data-testid': 'delete-selected', disabled: true, onclick: deleteSelected }, 'Delete');
  const restoreBtn = h('button', { class: 'hidden', 'data-testid': 'restore-selected', disabled: true, onclick: restoreSelected }, 'Restore');
  const thead = h('thead');
  const tbody = h('tbody');
  const pageInfo = h('span', { 'data-testid': 'runs-page-info' });
  const prevBtn = h('button', { 'data-testid': 'runs-prev', onclick: () => { page -= 1; load(); } }, '← Previous');
  const nextBtn = h('button', { 'data-testid': 'runs-next', onclick: () => { page += 1; load(); } }, 'Next →');
  const table = h('table', { class: 'data', 'data-testid': 'runs-table', 'aria-busy': 'true' }, thead, tbody);

  mount(el,
    h('div', { class: 'page-head' },
      h('div', null, h('div', { class: 'crumbs' }, h('a', { href: '#/experiments' }, 'Experiments')), title, sub),
      h('div', { class: 'actions' }, compareBtn, restoreBtn, deleteBtn)),
    h('form', {
      class: 'toolbar',
      onsubmit: (e) => { e.preventDefault(); applyFilter(); },
    },
    h('div', { class: 'grow' }, filterInput,
      h('button', { type: 'submit', 'data-testid': 'runs-filter-apply' }, 'Apply'),
      h('button', { type: 'button', 'data-testid': 'runs-filter-clear', onclick: () => { filterInput.value = ''; applyFilter(); } }, 'Clear')),
    viewSelect,
    h('span', { class: 'rel' }, columnsBtn, picker)),
    filterError,
    h('div', { class: 'table-wrap' }, table),
    h('div', { class: 'pager' }, pageInfo, h('span', { class: 'spacer' }), prevBtn, nextBtn));

  const closePicker = () => picker.classList.add('hidden');
  const onKey = (e) => { if (e.key === 'Escape') closePicker(); };
  document.addEventListener('click', closePicker);
  document.addEventListener('keydown', onKey);

  function applyFilter() {
    const f = filterInput.value.trim();
    if (f === state.filter) { tokens = ['']; page = 0; load(); return; } // re-run the same filter
    setQuery({ filter: f });
  }

  // ---- experiments (names and permissions) -----------------------------------------------
  async function loadExperiments() {
    const ids = state.e.map((id) => `'${id.replaceAll("'", "''")}'`).join(', ');
    try {
      const data = await api.get('/experiments', { filter: `experiment_id IN (${ids})`, view: 'all', page_size: 100 });
      experiments = data.experiments || [];
    } catch (err) {
      experiments = [];
      if (err.status !== 400) showError(err);
    }
    const byId = new Map(experiments.map((x) => [String(x.experiment_id), x]));
    clear(title);
    clear(sub);
    if (state.e.length === 1) {
      const x = byId.get(state.e[0]);
      title.append(x ? x.name : `Experiment ${state.e[0]}`);
      sub.append(`Experiment ${state.e[0]}`, x && x.lifecycle_stage === 'deleted' ? ' · deleted' : '');
    } else {
      title.append(`Runs of ${state.e.length} experiments`);
      sub.append(...state.e.map((id) => h('span', { class: 'chip' }, byId.get(id) ? byId.get(id).name : id)));
    }
  }

  const expName = (id) => {
    const x = experiments.find((e) => String(e.experiment_id) === String(id));
    return x ? x.name : String(id);
  };
  // deleting needs MANAGE on each run's experiment (run rows and experiments both say)
  const mayDelete = () => rows.every((r) => api.can(r.permission, 'MANAGE')) && experiments.every((x) => api.can(x.permission, 'MANAGE'));

  // ---- table -----------------------------------------------------------------------------
  function allColumns() {
    const base = state.e.length > 1
      ? [...BASE_COLUMNS.slice(0, 2), { id: 'experiment', label: 'Experiment', sort: null }, ...BASE_COLUMNS.slice(2)]
      : BASE_COLUMNS;
    return [...base, ...state.cols.map((c) => ({ ...c, label: c.key, sort: sortKeyOf(c) }))];
  }

  function renderHead() {
    const sort = parseSort(state.sort);
    const allOnPage = rows.length > 0 && rows.every((r) => selected.has(r.run_id));
    const someOnPage = rows.some((r) => selected.has(r.run_id));
    const headAll = h('input', {
      type: 'checkbox', 'data-testid': 'select-all', 'aria-label': 'Select all runs on this page', checked: allOnPage, indeterminate: someOnPage && !allOnPage,
      onchange: (e) => { for (const r of rows) { if (e.target.checked) selected.add(r.run_id); else selected.delete(r.run_id); } renderBody(); renderHead(); syncSelection(); },
    });
    mount(thead, h('tr', null, h('th', { class: 'check' }, headAll), allColumns().map((c) => {
      const active = sort && c.sort && sort.key === c.sort;
      const group = c.kind ? (c.kind === 'metrics' ? `metric · ${c.agg}` : c.kind === 'params' ? 'param' : 'tag') : null;
      const th = h('th', {
        class: `${c.sort ? 'sortable' : ''} ${c.kind === 'metrics' ? 'num' : ''}`,
        'data-testid': 'col-header', 'data-col': c.id,
        'aria-sort': active ? (sort.dir === 'ASC' ? 'ascending' : 'descending') : undefined,
        title: c.sort ? `Sort by ${c.sort}` : (c.kind === 'metrics' ? 'Sorting by a min/max value is not supported: sort the last value' : undefined),
        onclick: c.sort ? () => {
          const dir = active && sort.dir === 'ASC' ? 'DESC' : 'ASC';
          setQuery({ sort: `${c.sort} ${dir}` });
        } : undefined,
      }, group ? h('span', { class: 'group' }, group) : null, c.label,
      active ? h('span', { class: 'arrow' }, sort.dir === 'ASC' ? '▲' : '▼') : null);
      return th;
    })));
  }

  function cell(run, c) {
    const attrs = { 'data-col': c.id };
    switch (c.id) {
      case 'attributes.run_name':
        return h('td', attrs, h('a', { href: href(['run', run.run_id]), 'data-testid': 'run-link', title: run.run_id }, run.run_name || shortId(run.run_id)));
      case 'attributes.status': return h('td', attrs, badge(run.status));
      case 'attributes.start_time': return h('td', { ...attrs, class: 'nowrap' }, fmtTime(run.start_time));
      case 'duration': {
        const end = run.end_time || (run.status === 'RUNNING' ? Date.now() : null);
        return h('td', { ...attrs, class: 'nowrap' }, run.start_time && end ? fmtDuration(end - run.start_time) : '—');
      }
      case 'attributes.user_id': return h('td', attrs, run.user_id || '');
      case 'experiment': return h('td', attrs, expName(run.experiment_id));
      default: break;
    }
    if (c.kind === 'metrics') {
      const m = (run.metrics || {})[c.key];
      const v = m ? m[c.agg] : undefined;
      return h('td', { ...attrs, class: 'num', title: v !== undefined ? `${v}${m.step !== undefined ? ` (last at step ${m.step})` : ''}` : undefined }, v !== undefined ? fmtNum(v) : '');
    }
    const v = (run[c.kind] || {})[c.key];
    return h('td', { ...attrs, title: v }, v ?? '');
  }

  function renderBody() {
    const cols = allColumns();
    const frag = document.createDocumentFragment();
    for (const run of rows) {
      const on = selected.has(run.run_id);
      frag.appendChild(h('tr', { class: on ? 'selected' : '', 'data-testid': 'run-row', 'data-run-id': run.run_id, 'data-run-name': run.run_name || '' },
        h('td', { class: 'check' }, h('input', {
          type: 'checkbox', 'data-testid': 'run-select', 'aria-label': `Select run ${run.run_name || run.run_id}`, checked: on,
          onchange: (e) => {
            if (e.target.checked) selected.add(run.run_id); else selected.delete(run.run_id);
            e.target.closest('tr').classList.toggle('selected', e.target.checked);
            renderHead();
            syncSelection();
          },
        })),
        cols.map((c) => cell(run, c))));
    }
    if (!rows.length) {
      frag.appendChild(h('tr', null, h('td', { colspan: cols.length + 1, class: 'empty', 'data-testid': 'runs-empty' },
        state.filter ? 'No run matches this filter.' : 'No runs in this view.')));
    }
    mount(tbody, frag);
  }

  function syncSelection() {
    const n = selected.size;
    compareBtn.disabled = n < 2 || n > 10;
    compareBtn.textContent = n ? `Compare ${n}` : 'Compare';
    compareBtn.title = n > 10 ? 'Compare takes 2 to 10 runs' : 'Select 2 to 10 runs to compare';
    deleteBtn.disabled = n === 0 || !mayDelete();
    deleteBtn.textContent = n ? `Delete ${n}` : 'Delete';
    deleteBtn.classList.toggle('hidden', !mayDelete() || state.view === 'deleted');
    const chosen = rows.filter((r) => selected.has(r.run_id));
    restoreBtn.classList.toggle('hidden', state.view === 'active' || !mayDelete());
    restoreBtn.disabled = !chosen.some((r) => r.lifecycle_stage === 'deleted');
    restoreBtn.textContent = n ? `Restore ${n}` : 'Restore';
  }

  async function restoreSelected() {
    const ids = [...selected];
    await busy(restoreBtn, async () => {
      const res = await api.post('/runs/restore', { run_ids: ids });
      toast(`Restored ${res.restored ?? ids.length} run(s)`);
      selected.clear();
      syncSelection();
      await load();
    });
  }

  async function deleteSelected() {
    const ids = [...selected];
    const ok = await confirmDialog(`Delete ${ids.length} run${ids.length > 1 ? 's' : ''}? Deleted runs can be shown with the "Deleted" view.`, { ok: 'Delete', danger: true });
    if (!ok) return;
    await busy(deleteBtn, async () => {
      const res = await api.post('/runs/delete', { run_ids: ids });
      toast(`Deleted ${res.deleted ?? ids.length} run(s)`);
      selected.clear();
      syncSelection();
      await load();
    });
  }

  function showFilterError(err) {
    clear(filterError);
    filterError.classList.remove('hidden');
    filterInput.classList.add('invalid');
    filterError.append(h('strong', null, 'Invalid filter: '), h('span', { 'data-testid': 'filter-error-message' }, err.message));
    const text = state.filter;
    if (err.position !== null && err.position >= 0 && err.position <= text.length) {
      const pos = err.position;
      filterError.dataset.position = String(pos);
      filterError.append(h('pre', { 'data-testid': 'filter-error-marker' },
        text.slice(0, pos), h('mark', null, text.slice(pos, pos + 1) || ' '), text.slice(pos + 1), '\n',
        ' '.repeat(pos), h('span', { class: 'caret' }, '^'), h('span', { class: 'muted' }, ` at position ${pos}`)));
      if (filterInput.value === text) {
        filterInput.focus();
        filterInput.setSelectionRange(pos, Math.min(text.length, pos + 1));
      }
    }
  }

  function hideFilterError() {
    filterError.classList.add('hidden');
    delete filterError.dataset.position;
    filterInput.classList.remove('invalid');
  }

  async function load() {
    const mine = ++loadSeq;
    table.setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await api.get('/runs', {
        experiment_ids: state.e, filter: state.filter, order_by: state.sort, view: state.view,
        page_size: PAGE_SIZE, page_token: tokens[page],
      });
    } catch (err) {
      if (mine !== loadSeq) return;
      table.setAttribute('aria-busy', 'false');
      rows = [];
      if (err.status === 400 && (err.position !== null || /filter/i.test(`${err.reason} ${err.message}`))) showFilterError(err);
      else showError(err);
      renderHead();
      mount(tbody, h('tr', null, h('td', { colspan: allColumns().length + 1, class: 'empty' }, 'No runs to show.')));
      nextBtn.disabled = true;
      prevBtn.disabled = page === 0;
      pageInfo.textContent = '';
      return;
    }
    if (mine !== loadSeq) return;
    hideFilterError();
    rows = data.runs || [];
    nextToken = data.next_page_token || '';
    if (nextToken) tokens[page + 1] = nextToken;
    else tokens = tokens.slice(0, page + 1);
    if (data.columns) known = { params: data.columns.params || [], metrics: data.columns.metrics || [], tags: data.columns.tags || [] };
    renderHead();
    renderBody();
    syncSelection();
    const start = page * PAGE_SIZE;
    pageInfo.textContent = rows.length ? `Page ${page + 1} · runs ${start + 1}–${start + rows.length}` : `Page ${page + 1}`;
    prevBtn.disabled = page === 0;
    nextBtn.disabled = !nextToken;
    if (!picker.classList.contains('hidden')) renderPicker();
    table.setAttribute('aria-busy', 'false');
    columnsBtn.textContent = state.cols.length ? `Columns (${state.cols.length})` : 'Columns';
  }

  // ---- column picker ---------------------------------------------------------------------
  let pickerSearch = '';
  function togglePicker() {
    if (picker.classList.toggle('hidden')) return;
    renderPicker();
  }

  function setCols(ids) {
    try { localStorage.setItem(colsKey(state.e), ids.join(',')); } catch { /* storage off: the URL still has them */ }
    setQuery({ cols: ids });
  }

  function renderPicker() {
    const chosen = new Set(state.cols.map((c) => c.id));
    const toggle = (id, on) => {
      const ids = state.cols.map((c) => c.id).filter((x) => x !== id);
      if (on) ids.push(id);
      setCols(ids);
    };
    const search = h('input', {
      type: 'search', placeholder: 'Find a key', value: pickerSearch, 'data-testid': 'column-search', style: { width: '100%' },
      oninput: (e) => { pickerSearch = e.target.value; renderList(); },
    });
    const listEl = h('div');
    const renderList = () => {
      const f = pickerSearch.toLowerCase();
      const match = (k) => !f || k.toLowerCase().includes(f);
      const section = (label, kind, keys) => {
        const shown = keys.filter(match);
        return [h('h3', null, `${label} (${keys.length})`),
          shown.length ? shown.slice(0, 200).map((k) => (kind === 'metrics'
            ? h('div', { class: 'picker-row' }, h('span', { class: 'key' }, k),
              AGGS.map((agg) => {
                const id = `metrics.${k}:${agg}`;
                return h('label', null, h('input', { type: 'checkbox', checked: chosen.has(id), 'data-testid': 'column-option', 'data-col': id, onchange: (e) => toggle(id, e.target.checked) }), agg);
              }))
            : h('div', { class: 'picker-row' }, h('label', { style: { color: 'inherit', flex: '1' } },
              h('input', { type: 'checkbox', checked: chosen.has(`${kind}.${k}`), 'data-testid': 'column-option', 'data-col': `${kind}.${k}`, onchange: (e) => toggle(`${kind}.${k}`, e.target.checked) }),
              h('span', { class: 'key' }, k)))))
            : h('div', { class: 'muted small' }, keys.length ? 'No match.' : 'None logged.')];
      };
      mount(listEl,
        section('Metrics', 'metrics', known.metrics),
        section('Params', 'params', known.params),
        section('Tags', 'tags', known.tags));
    };
    renderList();
    mount(picker,
      h('div', { class: 'form-row' }, search),
      listEl,
      h('div', { class: 'form-row', style: { marginTop: '10px', marginBottom: '0' } },
        h('button', { 'data-testid': 'columns-reset', disabled: !state.cols.length, onclick: () => setCols([]) }, 'Remove all'),
        h('span', { class: 'muted small' }, 'Chosen columns are kept in the URL: share it to share the view.')));
  }

  // ---- go --------------------------------------------------------------------------------
  await loadExperiments();
  await load();

  return {
    update(q) {
      const next = readState(withSavedCols(q));
      const refetch = next.e.join() !== state.e.join() || next.filter !== state.filter || next.sort !== state.sort || next.view !== state.view;
      const expsChanged = next.e.join() !== state.e.join();
      state = next;
      filterInput.value = state.filter;
      viewSelect.value = state.view;
      if (expsChanged) loadExperiments();
      if (refetch) { tokens = ['']; page = 0; load(); return; }
      renderHead();
      renderBody();
      columnsBtn.textContent = state.cols.length ? `Columns (${state.cols.length})` : 'Columns';
      if (!picker.classList.contains('hidden')) renderPicker();
    },
    destroy() { document.removeEventListener('click', closePicker); document.removeEventListener('keydown', onKey); },
  };
}
