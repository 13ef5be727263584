// #/experiments?q=&view=active|deleted|all : list, search, create, rename, delete, restore.
import * as api from './api.js';
import { h, mount, clear, fmtTime, badge, busy, confirmDialog, toast, showError } from './dom.js';
import { href, setQuery, go } from './router.js';

const PAGE_SIZE = 50;

/** Plain words search names; text with an operator is passed on as keel filter syntax. */
export function searchFilter(text) {
  const t = (text || '').trim();
  if (!t) return '';
  // an operator, or a keyword between spaces ("name LIKE 'x%'", "tags.team IS NULL")
  if (/[=<>]/.test(t) || /\s(like|ilike|in|is)\s/i.test(t)) return t;
  return `name ILIKE '%${t.replaceAll("'", "''")}%'`;
}

export async function render({ el, query }) {
  let tokens = ['']; // page tokens of pages 1..n seen so far
  let page = 0;
  let selected = new Set();
  let state = { q: query.get('q') || '', view: query.get('view') || 'active' };

  const searchInput = h('input', { type: 'search', placeholder: "Search names, or a filter: tags.team = 'vision'", value: state.q, 'data-testid': 'experiments-search', 'aria-label': 'Search experiments' });
  const viewSelect = h('select', { 'data-testid': 'experiments-view', 'aria-label': 'Which experiments' },
    ['active', 'deleted', 'all'].map((v) => h('option', { value: v, selected: v === state.view }, v === 'active' ? 'Active' : v === 'deleted' ? 'Deleted' : 'All')));
  const nameInput = h('input', { type: 'text', placeholder: 'New experiment name', 'data-testid': 'create-experiment-name', 'aria-label': 'New experiment name' });
  const createBtn = h('button', { class: 'primary', 'data-testid': 'create-experiment', type: 'submit' }, '+ Create');
  const compareBtn = h('button', { 'data-testid': 'open-selected-runs', disabled: true, onclick: () => go(['runs'], { e: [...selected] }) }, 'Runs of selected');
  const tbody = h('tbody');
  const pager = h('div', { class: 'pager' });

  const createForm = h('form', {
    class: 'toolbar', style: { marginBottom: '0' },
    onsubmit: (e) => {
      e.preventDefault();
      const name = nameInput.value.trim();
      if (!name) { nameInput.focus(); return; }
      busy(createBtn, async () => {
        const exp = await api.post('/experiments', { name });
        nameInput.value = '';
        toast(`Created experiment "${exp.name}"`);
        await load();
      });
    },
  }, nameInput, createBtn);

  mount(el,
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Experiments'), h('div', { class: 'sub' }, 'Open one to see its runs; tick several to see their runs together.')),
      h('div', { class: 'actions' }, createForm)),
    h('form', {
      class: 'toolbar',
      onsubmit: (e) => { e.preventDefault(); setQuery({ q: searchInput.value.trim() }); },
    },
    h('div', { class: 'grow' }, searchInput, h('button', { type: 'submit', 'data-testid': 'experiments-search-apply' }, 'Search')),
    viewSelect, compareBtn),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'data', 'data-testid': 'experiments-table' },
        h('thead', null, h('tr', null,
          h('th', { class: 'check' }), h('th', null, 'Name'), h('th', { class: 'num' }, 'ID'), h('th', null, 'Created'),
          h('th', null, 'Last update'), h('th', null, 'Tags'), h('th', null, 'State'), h('th', null, ''))),
        tbody)),
    pager);

  viewSelect.addEventListener('change', () => setQuery({ view: viewSelect.value === 'active' ? '' : viewSelect.value }));

  function syncSelection() {
    compareBtn.disabled = selected.size === 0;
    compareBtn.textContent = selected.size ? `Runs of ${selected.size} selected` : 'Runs of selected';
  }

  function row(exp) {
    const id = String(exp.experiment_id);
    const deleted = exp.lifecycle_stage === 'deleted';
    const nameCell = h('td', null, h('a', { href: href(['runs'], { e: id }), 'data-testid': 'experiment-link', 'data-experiment-id': id }, exp.name));
    const actions = h('td', { class: 'nowrap' });
    const tr = h('tr', { 'data-testid': 'experiment-row', 'data-experiment-id': id, 'data-name': exp.name },
      h('td', { class: 'check' }, h('input', {
        type: 'checkbox', 'data-testid': 'experiment-select', 'aria-label': `Select ${exp.name}`, checked: selected.has(id),
        onchange: (e) => { if (e.target.checked) selected.add(id); else selected.delete(id); syncSelection(); },
      })),
      nameCell,
      h('td', { class: 'num mono' }, id),
      h('td', { class: 'nowrap' }, fmtTime(exp.creation_time)),
      h('td', { class: 'nowrap' }, fmtTime(exp.last_update_time)),
      h('td', null, Object.entries(exp.tags || {}).filter(([k]) => !k.startsWith('mlflow.')).slice(0, 6).map(([k, v]) => h('span', { class: 'chip tag', title: `${k}=${v}` }, `${k}: ${v}`))),
      h('td', null, deleted ? badge('deleted') : badge('active', 'ok')),
      actions);

    const mayEdit = api.can(exp.permission, 'EDIT');
    const mayManage = api.can(exp.permission, 'MANAGE');
    if (!deleted && mayEdit) {
      actions.appendChild(h('button', {
        class: 'link', 'data-testid': 'rename-experiment',
        onclick: () => {
          const input = h('input', { type: 'text', value: exp.name, 'data-testid': 'rename-experiment-input', 'aria-label': 'New name' });
          const save = h('button', { class: 'primary', type: 'submit', 'data-testid': 'rename-experiment-save' }, 'Save');
          mount(nameCell, h('form', {
            class: 'form-row', style: { margin: 0 },
            onsubmit: (e) => {
              e.preventDefault();
              const name = input.value.trim();
              if (!name || name === exp.name) { load(); return; }
              busy(save, async () => { await api.patch(`/experiments/${api.enc(id)}`, { name }); toast(`Renamed to "${name}"`); await load(); });
            },
          }, input, save, h('button', { type: 'button', onclick: () => load() }, 'Cancel')));
          input.focus();
          input.select();
        },
      }, 'Rename'), ' ');
    }
    if (!deleted && mayManage) {
      actions.appendChild(h('button', {
        class: 'link', style: { color: 'var(--danger)' }, 'data-testid': 'delete-experiment',
        onclick: async (e) => {
          const ok = await confirmDialog(`Delete experiment "${exp.name}" and hide its runs? It can be restored later.`, { ok: 'Delete', danger: true });
          if (ok) busy(e.target, async () => { await api.del(`/experiments/${api.enc(id)}`); toast(`Deleted "${exp.name}"`); await load(); });
        },
      }, 'Delete'));
    }
    if (deleted && mayManage) {
      actions.appendChild(h('button', {
        class: 'link', 'data-testid': 'restore-experiment',
        onclick: (e) => busy(e.target, async () => { await api.post(`/experiments/${api.enc(id)}/restore`); toast(`Restored "${exp.name}"`); await load(); }),
      }, 'Restore'));
    }
    return tr;
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    let data;
    try {
      data = await api.get('/experiments', { filter: searchFilter(state.q), view: state.view, page_size: PAGE_SIZE, page_token: tokens[page] });
    } catch (err) {
      if (mine !== seq) return;
      mount(tbody, h('tr', null, h('td', { colspan: 8, class: 'empty' }, 'Could not load experiments.')));
      clear(pager);
      showError(err);
      return;
    }
    if (mine !== seq) return;
    const exps = data.experiments || [];
    if (data.next_page_token) tokens[page + 1] = data.next_page_token;
    else tokens = tokens.slice(0, page + 1);
    mount(tbody, exps.length ? exps.map(row)
      : h('tr', null, h('td', { colspan: 8, class: 'empty', 'data-testid': 'experiments-empty' }, state.q ? 'No experiment matches.' : 'No experiments yet: create one above, or log a run with the SDK.')));
    const start = page * PAGE_SIZE;
    mount(pager,
      h('span', { 'data-testid': 'experiments-page-info' }, exps.length ? `${start + 1}–${start + exps.length}` : ''),
      h('span', { class: 'spacer' }),
      h('button', { 'data-testid': 'experiments-prev', disabled: page === 0, onclick: () => { page -= 1; load(); } }, '← Previous'),
      h('button', { 'data-testid': 'experiments-next', disabled: !data.next_page_token, onclick: () => { page += 1; load(); } }, 'Next →'));
  }

  await load();
  return {
    update(q) {
      state = { q: q.get('q') || '', view: q.get('view') || 'active' };
      searchInput.value = state.q;
      viewSelect.value = state.view;
      tokens = [''];
      page = 0;
      load();
    },
  };
}
