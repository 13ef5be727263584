// A parallel-coordinates plot in SVG: one vertical axis per param (numeric or categorical) and a
// last axis for the chosen metric; one line per run, coloured by the metric's value.
import { h, fmtNum } from './dom.js';

const RAMP = [[59, 111, 212], [143, 91, 197], [224, 70, 106]];

export function rampColor(t) {
  if (!Number.isFinite(t)) return '#9aa5b4';
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** An axis over values (strings or numbers): numeric when every value parses as a number. */
function axisOf(name, values) {
  const present = values.filter((v) => v !== undefined && v !== null && v !== '');
  const numeric = present.length > 0 && present.every((v) => Number.isFinite(Number(v)));
  if (numeric) {
    const nums = present.map(Number);
    let min = Math.min(...nums);
    let max = Math.max(...nums);
    if (min === max) { min -= 1; max += 1; }
    return { name, numeric, min, max, pos: (v) => (v === undefined || v === null || v === '' ? null : (Number(v) - min) / (max - min)), labels: [[0, fmtNum(min)], [1, fmtNum(max)]] };
  }
  const cats = [...new Set(present.map(String))].sort();
  const pos = (v) => {
    if (v === undefined || v === null || v === '') return null;
    return cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1);
  };
  return { name, numeric, pos, labels: cats.slice(0, 12).map((c) => [pos(c), c.length > 14 ? `${c.slice(0, 13)}…` : c]) };
}

/** runs: [{run_id, label, params, metrics}], paramKeys: [...], metric: key. */
export function parallelCoordinates({ runs, paramKeys, metric }) {
  const axes = paramKeys.map((k) => axisOf(k, runs.map((r) => (r.params || {})[k])));
  const metricValues = runs.map((r) => ((r.metrics || {})[metric] || {}).last);
  const mAxis = axisOf(metric, metricValues);
  mAxis.metric = true;
  axes.push(mAxis);
  const left = 90;
  const right = 90;
  const gap = Math.max(200, Math.min(240, 1100 / Math.max(1, axes.length - 1)));
  const W = left + right + gap * (axes.length - 1);
  const top = 34;
  const plotH = 260;
  const H = top + plotH + 34;
  const x = (i) => left + i * gap;
  const y = (t) => top + plotH - (0.05 + t * 0.9) * plotH; // extremes sit inside the axis, not on its ends
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, style: { maxWidth: `${W}px`, minWidth: `${Math.min(W, 600)}px` }, role: 'img', 'aria-label': `Parallel coordinates of params against ${metric}` });

  const mNums = metricValues.filter((v) => Number.isFinite(v));
  const mMin = Math.min(...mNums);
  const mMax = Math.max(...mNums);
  const lines = h('g');
  runs.forEach((r, idx) => {
    const pts = [];
    axes.forEach((a, i) => {
      const v = a.metric ? metricValues[idx] : (r.params || {})[a.name];
      const t = a.pos(v);
      if (t !== null && Number.isFinite(t)) pts.push(`${x(i)},${y(t).toFixed(1)}`);
    });
    const mv = metricValues[idx];
    const t = mMax > mMin ? (mv - mMin) / (mMax - mMin) : 0.5;
    lines.appendChild(h('polyline', { class: 'pc-line', points: pts.join(' '), stroke: rampColor(Number.isFinite(mv) ? t : NaN), 'data-testid': 'parcoords-line', 'data-run-id': r.run_id },
      h('title', null, `${r.label}: ${metric} = ${Number.isFinite(mv) ? fmtNum(mv) : 'not logged'}`)));
  });
  svg.appendChild(lines);

  axes.forEach((a, i) => {
    const g = h('g', { 'data-testid': 'parcoords-axis', 'data-axis': a.name });
    g.append(
      h('line', { class: 'axis-line', x1: x(i), x2: x(i), y1: top, y2: top + plotH }),
      h('text', { x: x(i), y: top - 14, 'text-anchor': 'middle', 'font-weight': '600', fill: a.metric ? '#b0305a' : '#1d2530' }, a.name.length > 22 ? `${a.name.slice(0, 21)}…` : a.name));
    const side = a.metric ? 1 : -1; // the metric's labels on the right, the params' on the left
    for (const [t, label] of a.labels) {
      g.append(
        h('line', { class: 'axis-line', x1: x(i) + 4 * side, x2: x(i), y1: y(t), y2: y(t) }),
        h('text', { x: x(i) + 7 * side, y: y(t) + 3.5, 'text-anchor': side > 0 ? 'start' : 'end' }, label));
    }
    svg.appendChild(g);
  });
  return h('div', { class: 'parcoords', 'data-testid': 'parcoords', 'data-axes': String(axes.length) },
    svg,
    h('div', { class: 'colorbar' }, mNums.length ? fmtNum(mMin) : '', h('span', { class: 'ramp' }), mNums.length ? fmtNum(mMax) : '', h('span', null, ` colour = ${metric}`)));
}
