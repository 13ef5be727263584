// #/run/<id>?x=step|time|relative&log=1&smooth=0.6 : one run: overview, params, metrics with
// charts, editable tags, artifacts.
import * as api from './api.js';
import { h, mount, fmtTime, fmtDuration, fmtNum, badge, busy, confirmDialog, toast, shortId, color } from './dom.js';
import { href, setQuery } from './router.js';
import { lineChart, chartControls, toMode } from './chart.js';
import { artifactBrowser } from './artifacts.js';

const FIRST_CHARTS = 12;
const MAX_POINTS = 1000;

export function chartSettings(q) {
  const x = ['step', 'time', 'relative'].includes(q.get('x')) ? q.get('x') : 'step';
  const smooth = Math.min(0.99, Math.max(0, Number(q.get('smooth')) || 0));
  return { x, log: q.get('log') === '1', smooth };
}

export function settingsQuery(s) {
  return { x: s.x === 'step' ? '' : s.x, log: s.log ? '1' : '', smooth: s.smooth ? String(s.smooth) : '' };
}

/** A cache of downsampled histories: key → {step|time → response}. */
export function historyCache() {
  const cache = new Map();
  return (runId, key, serverX) => {
    const id = `${runId}\u0000${key}\u0000${serverX}`;
    if (!cache.has(id)) {
      const p = api.get(`/runs/${api.enc(runId)}/metrics/${api.enc(key)}`, { x: serverX, max_points: MAX_POINTS });
      p.catch(() => cache.delete(id));
      cache.set(id, p);
    }
    return cache.get(id);
  };
}

export async function render({ el, params, query }) {
  const runId = params.runId;
  const run = await api.get(`/runs/${api.enc(runId)}`);
  let settings = chartSettings(query);
  const history = historyCache();
  const mayEdit = api.can(run.permission, 'EDIT');
  const metricKeys = Object.keys(run.metrics || {}).sort();
  let showAll = false;

  // The experiment's name is a nicety: the link shows its id until the name arrives, so the
  // metric charts' requests do not wait for it.
  const expLink = h('a', { href: href(['runs'], { e: run.experiment_id }) }, run.experiment_id);
  const crumbLink = h('a', { href: href(['runs'], { e: run.experiment_id }) }, `Experiment ${run.experiment_id}`);
  api.get(`/experiments/${api.enc(run.experiment_id)}`)
    .then((exp) => {
      if (exp && exp.name) expLink.textContent = crumbLink.textContent = exp.name;
    })
    .catch(() => { /* keep the id */ });

  const end = run.end_time || (run.status === 'RUNNING' ? Date.now() : null);
  const duration = run.duration_ms ?? (run.start_time && end ? end - run.start_time : null);
  const src = run.source || {};

  // ---- overview --------------------------------------------------------------------------
  const overview = h('dl', { class: 'kv', 'data-testid': 'run-overview' },
    h('dt', null, 'Status'), h('dd', { 'data-testid': 'run-status' }, badge(run.status)),
    h('dt', null, 'Run ID'), h('dd', { class: 'mono' }, run.run_id),
    h('dt', null, 'Experiment'), h('dd', null, expLink),
    h('dt', null, 'Started'), h('dd', null, fmtTime(run.start_time)),
    h('dt', null, 'Ended'), h('dd', null, fmtTime(run.end_time)),
    h('dt', null, 'Duration'), h('dd', { 'data-testid': 'run-duration' }, duration !== null ? fmtDuration(duration) : '—'),
    h('dt', null, 'User'), h('dd', null, run.user_id || '—'),
    h('dt', null, 'Source'), h('dd', { 'data-testid': 'run-source' },
      src.name ? h('span', { class: 'mono' }, src.name) : '—',
      src.type ? h('span', { class: 'muted' }, ` (${src.type})`) : null,
      src.git_commit ? h('div', { class: 'mono small muted' }, `git ${src.git_commit}`) : null),
    h('dt', null, 'Lifecycle'), h('dd', null, run.lifecycle_stage === 'deleted' ? badge('deleted') : 'active'),
    h('dt', null, 'Artifacts'), h('dd', { class: 'mono small' }, run.artifact_uri || '—'),
    run.parent_run_id ? [h('dt', null, 'Parent run'), h('dd', null, h('a', { href: href(['run', run.parent_run_id]), 'data-testid': 'parent-run-link' }, shortId(run.parent_run_id)))] : null,
    (run.children || []).length ? [h('dt', null, 'Child runs'), h('dd', { 'data-testid': 'child-runs' },
      run.children.map((c) => h('div', null, h('a', { href: href(['run', c.run_id]), 'data-testid': 'child-run-link' }, c.run_name || shortId(c.run_id)), ' ', badge(c.status))))] : null);

  // ---- params and metrics ----------------------------------------------------------------
  const paramEntries = Object.entries(run.params || {}).sort(([a], [b]) => a.localeCompare(b));
  const paramsTable = h('table', { class: 'data kvtable', 'data-testid': 'params-table' },
    h('tbody', null, paramEntries.length ? paramEntries.map(([k, v]) => h('tr', { 'data-key': k }, h('td', null, k), h('td', { class: 'mono' }, v)))
      : h('tr', null, h('td', { class: 'empty', colspan: 2 }, 'No params.'))));
  const metricsTable = h('table', { class: 'data', 'data-testid': 'metrics-table' },
    h('thead', null, h('tr', null, h('th', null, 'Metric'), h('th', { class: 'num' }, 'Last'), h('th', { class: 'num' }, 'Min'), h('th', { class: 'num' }, 'Max'), h('th', { class: 'num' }, 'Last step'), h('th', { class: 'num' }, 'Points'))),
    h('tbody', null, metricKeys.length ? metricKeys.map((k) => {
      const m = run.metrics[k];
      return h('tr', { 'data-key': k }, h('td', { class: 'mono' }, k), h('td', { class: 'num' }, fmtNum(m.last)), h('td', { class: 'num' }, fmtNum(m.min)), h('td', { class: 'num' }, fmtNum(m.max)), h('td', { class: 'num' }, m.step ?? ''), h('td', { class: 'num' }, m.count !== undefined && m.count !== null ? Number(m.count).toLocaleString('en') : ''));
    }) : h('tr', null, h('td', { class: 'empty', colspan: 6 }, 'No metrics.'))));

  // ---- tags ------------------------------------------------------------------------------
  const tags = { ...(run.tags || {}) };
  const tagsBody = h('tbody');
  function renderTags() {
    const entries = Object.entries(tags).sort(([a], [b]) => (a.startsWith('mlflow.') - b.startsWith('mlflow.')) || a.localeCompare(b));
    mount(tagsBody, entries.length ? entries.map(([k, v]) => tagRow(k, v)) : h('tr', null, h('td', { class: 'empty', colspan: 3 }, 'No tags.')));
  }
  function tagRow(k, v) {
    const valueCell = h('td', { class: 'mono', 'data-testid': 'tag-value' }, v);
    const actions = h('td', { class: 'nowrap', style: { width: '1%' } });
    if (mayEdit) {
      actions.append(
        h('button', {
          class: 'link', 'data-testid': 'tag-edit',
          onclick: () => {
            const input = h('input', { type: 'text', value: v, 'data-testid': 'tag-value-input', style: { width: '100%' }, 'aria-label': `Value of ${k}` });
            const save = h('button', { class: 'primary', type: 'submit', 'data-testid': 'tag-save' }, 'Save');
            mount(valueCell, h('form', {
              class: 'form-row', style: { margin: 0, flexWrap: 'nowrap' },
              onsubmit: (e) => {
                e.preventDefault();
                busy(save, async () => { await api.put(`/runs/${api.enc(runId)}/tags/${api.enc(k)}`, { value: input.value }); tags[k] = input.value; renderTags(); toast(`Tag ${k} saved`); });
              },
            }, input, save, h('button', { type: 'button', onclick: renderTags }, 'Cancel')));
            input.focus();
          },
        }, 'Edit'), ' ',
        h('button', {
          class: 'link', style: { color: 'var(--danger)' }, 'data-testid': 'tag-delete',
          onclick: async (e) => {
            if (!(await confirmDialog(`Delete tag "${k}"?`, { ok: 'Delete', danger: true }))) return;
            busy(e.target, async () => { await api.del(`/runs/${api.enc(runId)}/tags/${api.enc(k)}`); delete tags[k]; renderTags(); toast(`Tag ${k} deleted`); });
          },
        }, 'Delete'));
    }
    return h('tr', { 'data-testid': 'tag-row', 'data-key': k }, h('td', { class: 'mono' }, k), valueCell, actions);
  }
  renderTags();
  const newKey = h('input', { type: 'text', placeholder: 'key', 'data-testid': 'tag-new-key', 'aria-label': 'New tag key', style: { flex: '1' } });
  const newValue = h('input', { type: 'text', placeholder: 'value', 'data-testid': 'tag-new-value', 'aria-label': 'New tag value', style: { flex: '2' } });
  const addBtn = h('button', { type: 'submit', 'data-testid': 'tag-add' }, 'Add tag');
  const addForm = mayEdit ? h('form', {
    class: 'form-row', style: { marginTop: '10px', marginBottom: '0', flexWrap: 'nowrap' },
    onsubmit: (e) => {
      e.preventDefault();
      const k = newKey.value.trim();
      if (!k) { newKey.focus(); return; }
      busy(addBtn, async () => {
        await api.put(`/runs/${api.enc(runId)}/tags/${api.enc(k)}`, { value: newValue.value });
        tags[k] = newValue.value;
        newKey.value = ''; newValue.value = '';
        renderTags();
        toast(`Tag ${k} set`);
      });
    },
  }, newKey, newValue, addBtn) : null;

  // ---- charts ----------------------------------------------------------------------------
  const chartsGrid = h('div', { class: 'charts', 'data-testid': 'metric-charts' });
  const moreBtn = h('button', { 'data-testid': 'charts-show-all', onclick: () => { showAll = true; drawCharts(); } });
  const controlsSlot = h('div');
  function drawControls() {
    mount(controlsSlot, chartControls(settings, (s) => setQuery(settingsQuery(s), { replace: true })));
  }

  let drawSeq = 0;
  function drawCharts() {
    const mine = ++drawSeq;
    const keys = showAll ? metricKeys : metricKeys.slice(0, FIRST_CHARTS);
    moreBtn.textContent = `Show all ${metricKeys.length} charts`;
    moreBtn.classList.toggle('hidden', showAll || metricKeys.length <= FIRST_CHARTS);
    const serverX = settings.x === 'step' ? 'step' : 'time';
    if (!keys.length) {
      mount(chartsGrid, h('p', { class: 'muted' }, 'No metrics logged.'));
      return;
    }
    mount(chartsGrid, keys.map((key) => {
      const body = h('div', { class: 'chart-empty' }, 'Loading…');
      const info = h('span', { class: 'muted' });
      const card = h('div', { class: 'chart-card', 'data-testid': 'metric-chart', 'data-metric': key, 'data-state': 'loading' },
        h('div', { class: 'chart-title' }, key, info), body);
      const t0 = performance.now();
      history(runId, key, serverX).then((res) => {
        if (mine !== drawSeq) return;
        const t1 = performance.now();
        const points = toMode(res.points || [], settings.x, run.start_time && settings.x === 'relative' ? run.start_time : undefined);
        const chart = lineChart({ series: [{ name: key, color: color(0), points }], xMode: settings.x, logY: settings.log, smoothing: settings.smooth, title: key });
        body.replaceWith(chart);
        info.textContent = res.downsampled ? `${res.points.length.toLocaleString('en')} of ${Number(res.total).toLocaleString('en')} points` : `${(res.total ?? res.points.length).toLocaleString('en')} points`;
        card.dataset.total = String(res.total ?? res.points.length);
        // how long the answer took and how long drawing took (the browser tests read these)
        card.dataset.fetchMs = String(Math.round(t1 - t0));
        card.dataset.drawMs = String(Math.round(performance.now() - t1));
        card.dataset.state = 'ready';
      }).catch((err) => {
        if (mine !== drawSeq) return;
        body.textContent = `Could not load: ${err.message}`;
        card.dataset.state = 'error';
      });
      return card;
    }));
  }

  // ---- layout ----------------------------------------------------------------------------
  mount(el,
    h('div', { class: 'page-head' },
      h('div', null,
        h('div', { class: 'crumbs' }, h('a', { href: '#/experiments' }, 'Experiments'), ' / ', crumbLink),
        h('h1', { 'data-testid': 'run-title' }, run.run_name || shortId(run.run_id), ' ', badge(run.status)),
        h('div', { class: 'sub mono' }, run.run_id))),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel' }, h('h2', null, 'Overview'), overview),
      h('section', { class: 'panel' }, h('h2', null, 'Tags', h('span', { class: 'right muted small' }, mayEdit ? '' : 'read-only')),
        h('table', { class: 'data kvtable', 'data-testid': 'tags-table' }, tagsBody), addForm)),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel' }, h('h2', null, `Parameters (${paramEntries.length})`), paramsTable),
      h('section', { class: 'panel' }, h('h2', null, `Metrics (${metricKeys.length})`), metricsTable)),
    h('section', { class: 'panel' }, h('h2', null, 'Charts'), controlsSlot, chartsGrid, h('div', { style: { marginTop: '10px' } }, moreBtn)),
    h('section', { class: 'panel flush' }, h('h2', { style: { padding: '14px 16px 0' } }, 'Artifacts'), artifactBrowser({ runId })));

  drawControls();
  drawCharts();

  return {
    update(q) {
      settings = chartSettings(q);
      drawControls();
      drawCharts();
    },
  };
}

