// #/compare?runs=a,b,c&metric=rmse&group=params.model&x=step&log=1&smooth=0.5
// 2-10 runs: overlaid charts, a diff table of params and metrics, parallel coordinates of params
// against a chosen metric, and groups of runs by a param with the mean and spread.
import * as api from './api.js';
import { h, mount, fmtTime, fmtDuration, fmtNum, badge, color, shortId } from './dom.js';
import { href, setQuery, list } from './router.js';
import { lineChart, chartControls, toMode } from './chart.js';
import { parallelCoordinates } from './parcoords.js';
import { chartSettings, settingsQuery } from './page-run.js';

const FIRST_CHARTS = 12;

const same = (values) => values.every((v) => v === values[0]);

export function stats(values) {
  const v = values.filter((x) => Number.isFinite(x));
  if (!v.length) return null;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { n: v.length, mean, std, min: Math.min(...v), max: Math.max(...v) };
}

/** Runs grouped by a param's value: [{value, runs, stats: {metric: stats}}], largest first. */
export function groupRuns(runs, paramKey, metricKeys) {
  const groups = new Map();
  for (const r of runs) {
    const raw = (r.params || {})[paramKey];
    const value = raw === undefined ? '(not set)' : raw;
    if (!groups.has(value)) groups.set(value, []);
    groups.get(value).push(r);
  }
  return [...groups.entries()].map(([value, rs]) => ({
    value,
    runs: rs,
    stats: Object.fromEntries(metricKeys.map((k) => [k, stats(rs.map((r) => ((r.metrics || {})[k] || {}).last))])),
  })).sort((a, b) => b.runs.length - a.runs.length || String(a.value).localeCompare(String(b.value)));
}

/** Mean and mean±std of several histories, binned over x so runs logged at different steps line up. */
export function aggregateHistories(histories, bins = 200) {
  const all = histories.flat();
  if (!all.length) return { mean: [], band: [] };
  let xmin = Infinity; let xmax = -Infinity;
  for (const [x] of all) { if (x < xmin) xmin = x; if (x > xmax) xmax = x; }
  const span = xmax - xmin || 1;
  const distinct = new Set(all.map((p) => p[0]));
  const exact = distinct.size <= bins;
  const keyOf = (x) => (exact ? x : Math.min(bins - 1, Math.floor(((x - xmin) / span) * bins)));
  const perBin = new Map();
  for (const hist of histories) {
    const sums = new Map();
    for (const [x, y] of hist) {
      if (!Number.isFinite(y)) continue;
      const k = keyOf(x);
      const s = sums.get(k) || { x: 0, y: 0, n: 0 };
      s.x += x; s.y += y; s.n += 1;
      sums.set(k, s);
    }
    for (const [k, s] of sums) {
      const b = perBin.get(k) || { xs: [], ys: [] };
      b.xs.push(s.x / s.n); b.ys.push(s.y / s.n);
      perBin.set(k, b);
    }
  }
  const keys = [...perBin.keys()].sort((a, b) => a - b);
  const mean = [];
  const band = [];
  for (const k of keys) {
    const b = perBin.get(k);
    const st = stats(b.ys);
    const x = b.xs.reduce((a, c) => a + c, 0) / b.xs.length;
    mean.push([x, st.mean]);
    band.push([x, st.mean - st.std, st.mean + st.std]);
  }
  return { mean, band };
}

export async function render({ el, query }) {
  const ids = list(query, 'runs');
  if (ids.length < 2 || ids.length > 10) {
    mount(el, h('div', { class: 'panel' }, h('h1', null, 'Compare runs'),
      h('p', { 'data-testid': 'compare-invalid' }, `Compare takes 2 to 10 runs; ${ids.length} given. Select runs in a runs table and press Compare.`)));
    return {};
  }
  const data = await api.get('/compare', { run_ids: ids });
  const runs = data.runs || [];
  const label = (r) => r.run_name || shortId(r.run_id);
  const colorOf = new Map(runs.map((r, i) => [r.run_id, color(i)]));
  const metricKeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics || {})))].sort();
  const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
  // one request per metric for all runs (GET /api/metrics), cached per x axis
  const seriesCache = new Map();
  const seriesOf = (key, serverX) => {
    const id = `${key}\u0000${serverX}`;
    if (!seriesCache.has(id)) {
      const p = api.get('/metrics', { run_ids: ids, key, x: serverX, max_points: 1000 })
        .then((d) => new Map((d.series || []).map((s) => [s.run_id, s])));
      p.catch(() => seriesCache.delete(id));
      seriesCache.set(id, p);
    }
    return seriesCache.get(id);
  };
  let settings = chartSettings(query);
  let metric = metricKeys.includes(query.get('metric')) ? query.get('metric') : metricKeys[0];
  let group = paramKeys.includes(query.get('group')) ? query.get('group') : '';
  let diffOnly = query.get('diff') === '1';
  let showAll = false;
  const expIds = [...new Set(runs.map((r) => r.experiment_id))];
  let expLabel = expIds.length === 1 ? `Experiment ${expIds[0]}` : `${expIds.length} experiments`;
  if (expIds.length === 1) {
    try { expLabel = (await api.get(`/experiments/${api.enc(expIds[0])}`)).name || expLabel; } catch { /* the id will do */ }
  }

  // ---- legend ----------------------------------------------------------------------------
  const legend = h('div', { class: 'chart-legend', 'data-testid': 'compare-legend', style: { fontSize: '13px' } },
    runs.map((r) => h('span', null, h('span', { class: 'swatch', style: { background: colorOf.get(r.run_id) } }),
      h('a', { href: href(['run', r.run_id]), 'data-testid': 'compare-run-link', 'data-run-id': r.run_id }, label(r)))));

  // ---- charts ----------------------------------------------------------------------------
  const controlsSlot = h('div');
  const chartsGrid = h('div', { class: 'charts', 'data-testid': 'compare-charts' });
  const moreBtn = h('button', { 'data-testid': 'charts-show-all', onclick: () => { showAll = true; drawCharts(); } });
  let drawSeq = 0;
  function drawCharts() {
    const mine = ++drawSeq;
    mount(controlsSlot, chartControls(settings, (s) => setQuery(settingsQuery(s), { replace: true })));
    const keys = showAll ? metricKeys : metricKeys.slice(0, FIRST_CHARTS);
    moreBtn.textContent = `Show all ${metricKeys.length} charts`;
    moreBtn.classList.toggle('hidden', showAll || metricKeys.length <= FIRST_CHARTS);
    if (!keys.length) { mount(chartsGrid, h('p', { class: 'muted' }, 'None of these runs logged a metric.')); return; }
    const serverX = settings.x === 'step' ? 'step' : 'time';
    mount(chartsGrid, keys.map((key) => {
      const body = h('div', { class: 'chart-empty' }, 'Loading…');
      const card = h('div', { class: 'chart-card', 'data-testid': 'metric-chart', 'data-metric': key, 'data-state': 'loading' },
        h('div', { class: 'chart-title' }, key), body);
      const having = runs.filter((r) => (r.metrics || {})[key]);
      seriesOf(key, serverX).then((byRun) => {
        if (mine !== drawSeq) return;
        const series = having.map((r) => ({
          name: label(r), color: colorOf.get(r.run_id),
          points: toMode((byRun.get(r.run_id) || {}).points || [], settings.x, settings.x === 'relative' ? r.start_time : undefined),
        }));
        body.replaceWith(lineChart({ series, xMode: settings.x, logY: settings.log, smoothing: settings.smooth, title: key }));
        card.dataset.state = 'ready';
      }).catch((err) => {
        if (mine !== drawSeq) return;
        body.textContent = `Could not load: ${err.message}`;
        card.dataset.state = 'error';
      });
      return card;
    }));
  }

  // ---- diff table ------------------------------------------------------------------------
  const diffSlot = h('div');
  function drawDiff() {
    const rows = [];
    const section = (title) => rows.push(h('tr', null, h('th', { colspan: runs.length + 1, style: { position: 'static', background: '#fafbfc' } }, title)));
    const line = (kind, key, values, shown) => {
      const differs = !same(values.map((v) => (v === undefined ? undefined : String(v))));
      if (diffOnly && !differs) return;
      rows.push(h('tr', { class: differs ? 'diff' : '', 'data-testid': 'diff-row', 'data-kind': kind, 'data-key': key, 'data-differs': differs ? 'true' : 'false' },
        h('td', { class: 'mono' }, key), shown.map((s) => h('td', null, s))));
    };
    section('Run');
    line('attribute', 'status', runs.map((r) => r.status), runs.map((r) => badge(r.status)));
    line('attribute', 'start time', runs.map((r) => r.start_time), runs.map((r) => fmtTime(r.start_time)));
    line('attribute', 'duration', runs.map((r) => (r.end_time && r.start_time ? r.end_time - r.start_time : null)),
      runs.map((r) => (r.end_time && r.start_time ? fmtDuration(r.end_time - r.start_time) : '—')));
    line('attribute', 'user', runs.map((r) => r.user_id), runs.map((r) => r.user_id || ''));
    if (expIds.length > 1) line('attribute', 'experiment', runs.map((r) => r.experiment_id), runs.map((r) => r.experiment_id));
    section(`Params (${paramKeys.length})`);
    for (const k of paramKeys) {
      const vals = runs.map((r) => (r.params || {})[k]);
      line('param', k, vals, vals.map((v) => (v === undefined ? h('span', { class: 'muted' }, '—') : v)));
    }
    section(`Metrics, last value (${metricKeys.length})`);
    for (const k of metricKeys) {
      const vals = runs.map((r) => ((r.metrics || {})[k] || {}).last);
      line('metric', k, vals, vals.map((v) => (v === undefined ? h('span', { class: 'muted' }, '—') : h('span', { title: String(v), class: 'stat' }, fmtNum(v)))));
    }
    mount(diffSlot,
      h('div', { class: 'toolbar' },
        h('label', { class: 'inline' }, h('input', { type: 'checkbox', checked: diffOnly, 'data-testid': 'diff-only', onchange: (e) => setQuery({ diff: e.target.checked ? '1' : '' }, { replace: true }) }), 'Only rows that differ'),
        h('span', { class: 'muted small' }, h('span', { class: 'swatch', style: { background: 'var(--diff)', border: '1px solid #f0d79a' } }), 'highlighted rows differ between runs')),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-testid': 'diff-table' },
        h('thead', null, h('tr', null, h('th', null, ''), runs.map((r) => h('th', null, h('span', { class: 'swatch', style: { background: colorOf.get(r.run_id) } }), label(r))))),
        h('tbody', null, rows))));
  }

  // ---- parallel coordinates and groups -----------------------------------------------------
  const metricSelect = h('select', { 'data-testid': 'parcoords-metric', 'aria-label': 'Metric', onchange: (e) => setQuery({ metric: e.target.value }, { replace: true }) },
    metricKeys.map((k) => h('option', { value: k, selected: k === metric }, k)));
  const groupSelect = h('select', { 'data-testid': 'group-by', 'aria-label': 'Group by param', onchange: (e) => setQuery({ group: e.target.value }, { replace: true }) },
    h('option', { value: '' }, '— no grouping —'), paramKeys.map((k) => h('option', { value: k, selected: k === group }, k)));
  const pcSlot = h('div');
  const groupSlot = h('div');

  function drawParcoords() {
    metricSelect.value = metric || '';
    if (!metric) { mount(pcSlot, h('p', { class: 'muted' }, 'No metric to plot.')); return; }
    const differing = paramKeys.filter((k) => !same(runs.map((r) => (r.params || {})[k])));
    const axes = (differing.length ? differing : paramKeys).slice(0, 12);
    mount(pcSlot, axes.length
      ? parallelCoordinates({ runs: runs.map((r) => ({ ...r, label: label(r) })), paramKeys: axes, metric })
      : h('p', { class: 'muted' }, 'These runs logged no params.'),
    differing.length > 12 ? h('p', { class: 'muted small' }, `Showing 12 of ${differing.length} params that differ.`) : null,
    !differing.length && paramKeys.length ? h('p', { class: 'muted small' }, 'No param differs between these runs.') : null);
  }

  let groupSeq = 0;
  function drawGroups() {
    const mine = ++groupSeq;
    groupSelect.value = group;
    if (!group) { mount(groupSlot, h('p', { class: 'muted' }, 'Choose a param to group the runs by its value: each group shows the mean and standard deviation of every metric, and the mean and spread of the chosen metric over steps.')); return; }
    const groups = groupRuns(runs, group, metricKeys);
    const table = h('table', { class: 'data', 'data-testid': 'group-table' },
      h('thead', null, h('tr', null, h('th', null, group), h('th', { class: 'num' }, 'Runs'), metricKeys.map((k) => h('th', { class: 'num' }, h('span', { class: 'group' }, 'mean ± std'), k)))),
      h('tbody', null, groups.map((g, gi) => h('tr', { 'data-testid': 'group-row', 'data-group': g.value },
        h('td', null, h('span', { class: 'swatch', style: { background: color(gi) } }), g.value),
        h('td', { class: 'num' }, g.runs.length),
        metricKeys.map((k) => {
          const s = g.stats[k];
          return h('td', { class: 'num stat', 'data-metric': k, title: s ? `n=${s.n}, min ${fmtNum(s.min)}, max ${fmtNum(s.max)}` : '' },
            s ? [fmtNum(s.mean), h('span', { class: 'pm' }, ` ± ${fmtNum(s.std)}`)] : '—');
        })))));
    const chartSlot = h('div', { class: 'chart-card', 'data-testid': 'group-chart', 'data-state': 'loading' },
      h('div', { class: 'chart-title' }, `${metric}`, h('span', { class: 'muted' }, 'mean, band = ± 1 std, by step')), h('div', { class: 'chart-empty' }, 'Loading…'));
    mount(groupSlot, h('div', { class: 'table-wrap', style: { marginBottom: '14px' } }, table), metric ? h('div', { class: 'charts' }, chartSlot) : null);
    if (!metric) return;
    seriesOf(metric, 'step')
      .then((byRun) => {
        if (mine !== groupSeq) return;
        const perGroup = groups.map((g) => g.runs.filter((r) => byRun.has(r.run_id) && (r.metrics || {})[metric]).map((r) => byRun.get(r.run_id)));
        const series = [];
        const bands = [];
        perGroup.forEach((results, gi) => {
          const agg = aggregateHistories(results.map((res) => res.points || []));
          series.push({ name: `${group}=${groups[gi].value} (n=${results.length})`, color: color(gi), points: agg.mean });
          bands.push({ color: color(gi), points: agg.band });
        });
        chartSlot.lastChild.replaceWith(lineChart({ series, bands, xMode: 'step', logY: settings.log, smoothing: 0, title: metric }));
        chartSlot.dataset.state = 'ready';
      })
      .catch((err) => { if (mine === groupSeq) { chartSlot.lastChild.textContent = `Could not load: ${err.message}`; chartSlot.dataset.state = 'error'; } });
  }

  mount(el,
    h('div', { class: 'page-head' },
      h('div', null,
        h('div', { class: 'crumbs' }, h('a', { href: '#/experiments' }, 'Experiments'), ' / ',
          h('a', { href: href(['runs'], { e: expIds }) }, expLabel)),
        h('h1', { 'data-testid': 'compare-title' }, `Comparing ${runs.length} runs`), legend)),
    h('section', { class: 'panel' }, h('h2', null, 'Metrics over time'), controlsSlot, chartsGrid, h('div', { style: { marginTop: '10px' } }, moreBtn)),
    h('section', { class: 'panel' }, h('h2', null, 'Params and metrics'), diffSlot),
    h('section', { class: 'panel' }, h('h2', null, 'Params against a metric', h('span', { class: 'right' }, h('label', { class: 'inline' }, 'Metric', metricSelect))), pcSlot),
    h('section', { class: 'panel' }, h('h2', null, 'Groups', h('span', { class: 'right' }, h('label', { class: 'inline' }, 'Group by', groupSelect))), groupSlot));

  drawCharts();
  drawDiff();
  drawParcoords();
  drawGroups();

  return {
    update(q) {
      if (list(q, 'runs').join() !== ids.join()) return false;
      const next = chartSettings(q);
      const chartsChanged = JSON.stringify(next) !== JSON.stringify(settings);
      settings = next;
      const nextMetric = metricKeys.includes(q.get('metric')) ? q.get('metric') : metricKeys[0];
      const nextGroup = paramKeys.includes(q.get('group')) ? q.get('group') : '';
      const nextDiff = q.get('diff') === '1';
      if (chartsChanged) drawCharts();
      if (nextDiff !== diffOnly) { diffOnly = nextDiff; drawDiff(); }
      const metricChanged = nextMetric !== metric;
      metric = nextMetric;
      if (metricChanged) drawParcoords();
      if (metricChanged || nextGroup !== group || chartsChanged) { group = nextGroup; drawGroups(); }
    },
  };
}
