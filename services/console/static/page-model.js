// #/models/<name> : a registered model: versions (stage, aliases, tags, description, source run,
// status) and the history of stage and alias changes as a timeline.
import * as api from './api.js';
import { h, mount, fmtTime, badge, shortId } from './dom.js';
import { href } from './router.js';

export function historyText(ev) {
  const v = ev.version !== undefined && ev.version !== null && ev.version !== '' ? `version ${ev.version}` : '';
  const from = ev.from === undefined || ev.from === null || ev.from === '' ? null : ev.from;
  const to = ev.to === undefined || ev.to === null || ev.to === '' ? null : ev.to;
  switch (ev.kind) {
    case 'stage':
      return [h('strong', null, v), ` moved from ${from ?? 'None'} to `, badge(to ?? 'None')];
    case 'alias':
    case 'alias_deleted': {
      const name = ev.alias ? `@${ev.alias}` : 'alias';
      if (ev.kind === 'alias_deleted' || to === null) return [h('strong', null, name), ` removed${from !== null ? ` (was version ${from})` : ''}`];
      if (from === null) return [h('strong', null, name), ` set to version ${to}`];
      return [h('strong', null, name), ` moved from version ${from} to version ${to}`];
    }
    case 'transition_requested':
    case 'transition_approved':
    case 'transition_rejected':
    case 'transition_cancelled': {
      const what = ev.kind.slice('transition_'.length);
      return [h('strong', null, v), ` transition to ${to ?? '?'} ${what}`, ev.comment ? h('span', { class: 'muted' }, ` — “${ev.comment}”`) : ''];
    }
    default:
      return [h('strong', null, ev.kind || 'event'), v ? ` ${v}` : '', from !== null || to !== null ? `: ${from ?? '—'} → ${to ?? '—'}` : ''];
  }
}

export function timeline(history) {
  const events = [...(history || [])].sort((a, b) => Number(b.time) - Number(a.time));
  if (!events.length) return h('p', { class: 'muted', 'data-testid': 'history-empty' }, 'No stage or alias changes yet.');
  return h('ol', { class: 'timeline', 'data-testid': 'model-history' }, events.map((ev) => h('li', { class: (ev.kind || '').startsWith('alias') ? 'alias' : ev.kind || '', 'data-testid': 'history-event', 'data-kind': ev.kind || '', 'data-version': ev.version ?? '' },
    h('div', null, historyText(ev)),
    h('div', { class: 'when' }, fmtTime(ev.time), ev.user ? ` · ${ev.user}` : ''))));
}

export async function render({ el, params }) {
  const name = params.name;
  const m = await api.get(`/models/${api.enc(name)}`);
  const versions = [...(m.versions || [])].sort((a, b) => Number(b.version) - Number(a.version));
  const aliasesOf = (v) => {
    const own = v.aliases && v.aliases.length ? v.aliases : Object.entries(m.aliases || {}).filter(([, ver]) => String(ver) === String(v.version)).map(([a]) => a);
    return own;
  };

  mount(el,
    h('div', { class: 'page-head' }, h('div', null,
      h('div', { class: 'crumbs' }, h('a', { href: '#/models' }, 'Models')),
      h('h1', { 'data-testid': 'model-title' }, m.name),
      h('div', { class: 'sub' }, m.description || h('span', { class: 'muted' }, 'No description')))),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel' }, h('h2', null, 'Details'),
        h('dl', { class: 'kv' },
          h('dt', null, 'Created'), h('dd', null, fmtTime(m.creation_time)),
          h('dt', null, 'Updated'), h('dd', null, fmtTime(m.last_updated_time)),
          h('dt', null, 'Aliases'), h('dd', { 'data-testid': 'model-aliases' }, Object.keys(m.aliases || {}).length
            ? Object.entries(m.aliases).map(([a, v]) => h('a', { class: 'chip', href: href(['models', m.name, v]), 'data-testid': 'alias-chip', 'data-alias': a }, `@${a} → v${v}`))
            : h('span', { class: 'muted' }, 'none')),
          h('dt', null, 'Tags'), h('dd', null, Object.keys(m.tags || {}).length
            ? Object.entries(m.tags).map(([k, v]) => h('span', { class: 'chip tag' }, `${k}: ${v}`)) : h('span', { class: 'muted' }, 'none')),
          m.permission ? [h('dt', null, 'Your access'), h('dd', null, m.permission)] : null)),
      h('section', { class: 'panel' }, h('h2', null, 'History'), h('div', { style: { maxHeight: '320px', overflow: 'auto' } }, timeline(m.history)))),
    h('section', { class: 'panel' }, h('h2', null, `Versions (${versions.length})`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'versions-table' },
        h('thead', null, h('tr', null, ['Version', 'Stage', 'Aliases', 'Status', 'Source run', 'Created', 'Tags', 'Description'].map((t) => h('th', null, t)))),
        h('tbody', null, versions.length ? versions.map((v) => h('tr', { 'data-testid': 'version-row', 'data-version': String(v.version), 'data-stage': v.stage || 'None' },
          h('td', null, h('a', { href: href(['models', m.name, v.version]), 'data-testid': 'version-link' }, `Version ${v.version}`)),
          h('td', { 'data-testid': 'version-stage' }, badge(v.stage || 'None')),
          h('td', null, aliasesOf(v).map((a) => h('span', { class: 'chip' }, `@${a}`))),
          h('td', null, badge(v.status || '—')),
          h('td', null, v.run_id ? h('a', { href: href(['run', v.run_id]), class: 'mono', 'data-testid': 'source-run-link' }, shortId(v.run_id)) : h('span', { class: 'muted mono small', title: v.source }, v.source || '—')),
          h('td', { class: 'nowrap' }, fmtTime(v.creation_time)),
          h('td', null, Object.entries(v.tags || {}).map(([k, val]) => h('span', { class: 'chip tag' }, `${k}: ${val}`))),
          h('td', { class: 'muted' }, v.description || '')))
          : h('tr', null, h('td', { colspan: 8, class: 'empty' }, 'No versions.')))))));
  return {};
}
