// #/deployments : what the inference service serves, the version answering now, its ready state
// and which stage or alias it follows.
import * as api from './api.js';
import { h, mount, badge } from './dom.js';
import { href } from './router.js';

function follows(f) {
  if (!f || f === 'version') return h('span', { class: 'muted' }, 'a fixed version');
  const [kind, what] = f.split(':');
  if (kind === 'stage') return ['stage ', badge(what)];
  if (kind === 'alias') return h('span', { class: 'chip' }, `@${what}`);
  if (f === 'latest') return 'the latest version';
  if (f === 'run') return h('span', { class: 'muted' }, "a run's artifact");
  if (f === 'path') return h('span', { class: 'muted' }, 'a path');
  return f;
}

export async function render({ el }) {
  const body = h('div');
  const refresh = h('button', { 'data-testid': 'deployments-refresh', onclick: () => load() }, '↻ Refresh');
  mount(el,
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Deployments'), h('div', { class: 'sub' }, 'Models the inference service serves, and the version answering each now.')),
      h('div', { class: 'actions' }, refresh)),
    body);

  async function load() {
    let data;
    try {
      data = await api.get('/deployments');
    } catch (err) {
      if (err.status === 503 || err.status === 0) {
        mount(body, h('div', { class: 'note warn', 'data-testid': 'deployments-unavailable' }, h('strong', null, 'No inference service answers. '), err.message));
        return;
      }
      throw err;
    }
    const deps = data.deployments || [];
    mount(body, h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'deployments-table' },
      h('thead', null, h('tr', null, ['Name', 'Model', 'Version answering', 'State', 'Follows', 'Model URI', 'Message'].map((t) => h('th', null, t)))),
      h('tbody', null, deps.length ? deps.map((d) => h('tr', { 'data-testid': 'deployment-row', 'data-name': d.name, 'data-state': d.state },
        h('td', { class: 'mono' }, d.name),
        h('td', null, d.model_name ? h('a', { href: href(['models', d.model_name]) }, d.model_name) : '—'),
        h('td', { 'data-testid': 'deployment-version' }, d.model_name && d.version ? h('a', { href: href(['models', d.model_name, d.version]) }, `version ${d.version}`) : (d.version || '—')),
        h('td', null, badge(d.state || 'UNKNOWN', d.state === 'READY' ? 'ok' : /FAIL|ERROR/.test(d.state || '') ? 'bad' : 'warn')),
        h('td', null, follows(d.follows)),
        h('td', { class: 'mono small' }, d.model_uri || ''),
        h('td', { class: 'muted small' }, d.message || '')))
        : h('tr', null, h('td', { colspan: 7, class: 'empty', 'data-testid': 'deployments-empty' }, 'Nothing is deployed. Serve a model with keel models serve, or deploy one through the inference service.'))))));
  }
  await load();
  return {};
}
