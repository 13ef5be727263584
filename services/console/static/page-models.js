// #/models?q= : registered models, searched by name (or a filter), paged on the server.
import * as api from './api.js';
import { h, mount, clear, fmtTime, badge, showError } from './dom.js';
import { href, setQuery } from './router.js';
import { searchFilter } from './page-experiments.js';

const PAGE_SIZE = 50;

export async function render({ el, query }) {
  let q = query.get('q') || '';
  let tokens = [''];
  let page = 0;
  const search = h('input', { type: 'search', value: q, placeholder: "Search names, or a filter: tags.team = 'vision'", 'data-testid': 'models-search', 'aria-label': 'Search models' });
  const tbody = h('tbody');
  const pager = h('div', { class: 'pager' });

  mount(el,
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Registered models'),
      h('div', { class: 'sub' }, 'Register a model from a run\'s artifacts (run page → Artifacts → a model folder → Register model).'))),
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); setQuery({ q: search.value.trim() }); } },
      h('div', { class: 'grow' }, search, h('button', { type: 'submit', 'data-testid': 'models-search-apply' }, 'Search'))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'models-table' },
      h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Latest versions'), h('th', null, 'Aliases'), h('th', null, 'Tags'), h('th', null, 'Description'), h('th', null, 'Updated'))),
      tbody)),
    pager);

  let seq = 0;
  async function load() {
    const mine = ++seq;
    let data;
    try {
      data = await api.get('/models', { filter: searchFilter(q), page_size: PAGE_SIZE, page_token: tokens[page] });
    } catch (err) {
      if (mine !== seq) return;
      mount(tbody, h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'Could not load models.')));
      clear(pager);
      showError(err);
      return;
    }
    if (mine !== seq) return;
    const models = data.models || [];
    if (data.next_page_token) tokens[page + 1] = data.next_page_token; else tokens = tokens.slice(0, page + 1);
    mount(tbody, models.length ? models.map((m) => h('tr', { 'data-testid': 'model-row', 'data-name': m.name },
      h('td', null, h('a', { href: href(['models', m.name]), 'data-testid': 'model-link' }, m.name)),
      h('td', null, (m.latest_versions || []).map((v) => h('a', { href: href(['models', m.name, v.version]), class: 'nowrap', style: { marginRight: '8px' } }, `v${v.version} `, badge(v.stage || 'None')))),
      h('td', null, Object.entries(m.aliases || {}).map(([a, v]) => h('span', { class: 'chip' }, `@${a} → v${v}`))),
      h('td', null, Object.entries(m.tags || {}).slice(0, 6).map(([k, v]) => h('span', { class: 'chip tag' }, `${k}: ${v}`))),
      h('td', { class: 'muted' }, (m.description || '').slice(0, 140)),
      h('td', { class: 'nowrap' }, fmtTime(m.last_updated_time))))
      : h('tr', null, h('td', { colspan: 6, class: 'empty', 'data-testid': 'models-empty' }, q ? 'No model matches.' : 'No registered models yet.')));
    const start = page * PAGE_SIZE;
    mount(pager,
      h('span', null, models.length ? `${start + 1}–${start + models.length}` : ''),
      h('span', { class: 'spacer' }),
      h('button', { 'data-testid': 'models-prev', disabled: page === 0, onclick: () => { page -= 1; load(); } }, '← Previous'),
      h('button', { 'data-testid': 'models-next', disabled: !data.next_page_token, onclick: () => { page += 1; load(); } }, 'Next →'));
  }
  await load();
  return {
    update(nq) { q = nq.get('q') || ''; search.value = q; tokens = ['']; page = 0; load(); },
  };
}
