// Entry point: reads /api/session, asks for a token when auth is on and nobody is signed in,
// then dispatches hash routes to the page modules.
import * as api from './api.js';
import { h, mount, clear, clearErrors, showError } from './dom.js';
import { parse } from './router.js';

const PAGES = {
  experiments: () => import('./page-experiments.js'),
  runs: () => import('./page-runs.js'),
  run: () => import('./page-run.js'),
  compare: () => import('./page-compare.js'),
  models: () => import('./page-models.js'),
  model: () => import('./page-model.js'),
  version: () => import('./page-version.js'),
  deployments: () => import('./page-deployments.js'),
};

const view = document.getElementById('view');
let current = null; // {path, page: {update?, destroy?}}
let renderSeq = 0;
let signInShown = false;

function routeOf(segments) {
  const [first, second, third] = segments;
  switch (first) {
    case undefined: case 'experiments': return { page: 'experiments', nav: 'experiments', params: {} };
    case 'runs': return { page: 'runs', nav: 'experiments', params: {} };
    case 'run': return { page: 'run', nav: 'experiments', params: { runId: second } };
    case 'compare': return { page: 'compare', nav: 'experiments', params: {} };
    case 'models':
      if (third !== undefined) return { page: 'version', nav: 'models', params: { name: second, version: third } };
      if (second !== undefined) return { page: 'model', nav: 'models', params: { name: second } };
      return { page: 'models', nav: 'models', params: {} };
    case 'deployments': return { page: 'deployments', nav: 'deployments', params: {} };
    default: return null;
  }
}

async function dispatch() {
  if (signInShown) return;
  const loc = parse();
  const route = routeOf(loc.segments);
  for (const a of document.querySelectorAll('.nav a')) a.classList.toggle('active', route && a.dataset.nav === route.nav);
  // same page, new query: the page updates itself unless it answers false (needs a fresh render)
  if (current && current.path === loc.path && current.page && current.page.update && current.page.update(loc.query) !== false) return;
  const seq = ++renderSeq;
  if (current && current.page && current.page.destroy) current.page.destroy();
  current = null;
  clearErrors();
  if (!route) {
    mount(view, h('div', { class: 'panel' }, h('h1', null, 'Not found'), h('p', null, 'No page at ', h('code', null, loc.path), '. ', h('a', { href: '#/experiments' }, 'Go to experiments'))));
    return;
  }
  const el = h('div', { class: 'page', 'data-page': route.page });
  mount(view, el);
  try {
    const mod = await PAGES[route.page]();
    if (seq !== renderSeq) return;
    const page = await mod.render({ el, params: route.params, query: loc.query });
    if (seq !== renderSeq) { if (page && page.destroy) page.destroy(); return; }
    current = { path: loc.path, page: page || {} };
  } catch (err) {
    if (seq !== renderSeq) return;
    if (err && err.status === 401) return; // the sign-in form is on its way
    showError(err);
    if (!el.childNodes.length) el.appendChild(h('p', { class: 'muted' }, 'This page could not be loaded.'));
  }
}

function renderSession(s) {
  const box = document.getElementById('session');
  clear(box);
  if (!s.auth) {
    box.appendChild(h('span', { class: 'small', 'data-testid': 'auth-off', title: 'The server runs without authentication' }, 'auth off'));
  } else if (s.user) {
    box.append(
      h('span', null, 'Signed in as ', h('span', { class: 'who', 'data-testid': 'signed-in-user' }, s.user.name), s.user.is_admin ? ' (admin)' : ''),
    );
    if (s.identity_source !== 'proxy-header') {
      box.appendChild(h('button', { 'data-testid': 'sign-out', onclick: signOut }, 'Sign out'));
    }
  }
  if (s.keel_version) box.appendChild(h('span', { class: 'small', title: 'keel version' }, `v${s.keel_version}`));
}

function signOut() {
  api.token.clear();
  window.location.reload();
}

function showSignIn(message) {
  signInShown = true;
  document.body.classList.add('signed-out');
  if (current && current.page && current.page.destroy) current.page.destroy();
  current = null;
  clearErrors();
  renderSession({ auth: true, user: null });
  const input = h('input', { type: 'password', autocomplete: 'off', placeholder: 'keel API token', 'data-testid': 'token-input', 'aria-label': 'API token' });
  const error = h('div', { class: 'note bad', 'data-testid': 'sign-in-error' }, message || '');
  if (!message) error.classList.add('hidden');
  const form = h('form', {
    class: 'panel signin', 'data-testid': 'sign-in-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      api.token.set(t);
      signInShown = false;
      await boot();
    },
  },
  h('h1', null, 'Sign in to keel'),
  h('p', { class: 'muted' }, 'This server requires authentication. Paste an API token (', h('code', null, 'keel tokens create'), '); it is kept for this browser tab only.'),
  error, input,
  h('button', { class: 'primary', type: 'submit', 'data-testid': 'sign-in' }, 'Sign in'));
  mount(view, form);
  input.focus();
}

async function boot() {
  let s;
  try {
    s = await api.get('/session');
  } catch (err) {
    if (err.status === 401) {
      api.token.clear();
      showSignIn('That token was not accepted. Check it and try again.');
      return;
    }
    showError(err, 'Cannot read the session');
    return;
  }
  api.setSession(s);
  if (s.auth && !s.user) {
    const hadToken = !!api.token.get();
    api.token.clear();
    showSignIn(hadToken ? 'That token was not accepted. Check it and try again.' : '');
    return;
  }
  signInShown = false;
  document.body.classList.remove('signed-out');
  renderSession(s);
  current = null;
  await dispatch();
}

window.addEventListener('hashchange', () => { dispatch(); });
window.addEventListener('keel:unauthorized', () => {
  if (signInShown) return;
  const hadToken = !!api.token.get();
  api.token.clear();
  showSignIn(hadToken ? 'Your session ended or the token was revoked. Sign in again.' : '');
});

boot();
