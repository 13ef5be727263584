// Hand-written SVG line charts: several series, optional mean±spread bands, x over step, wall
// time or relative time, linear or log y, EMA smoothing, a hover read-out. Inputs are already
// downsampled by the server (about 1,000 points a series), so plain SVG polylines stay fast.
import { h, fmtNum, fmtDuration } from './dom.js';

const W = 560;
const H = 250;
const M = { top: 10, right: 14, bottom: 30, left: 56 };

/** Exponential moving average with TensorBoard's debiasing (weight 0 = raw). */
export function ema(points, weight) {
  if (!weight || weight <= 0) return points;
  const w = Math.min(weight, 0.999);
  let last = 0;
  let n = 0;
  const out = new Array(points.length);
  for (let i = 0; i < points.length; i += 1) {
    const y = points[i][1];
    if (!Number.isFinite(y)) { out[i] = points[i]; continue; }
    last = last * w + (1 - w) * y;
    n += 1;
    out[i] = [points[i][0], last / (1 - w ** n)];
  }
  return out;
}

/** About `count` round tick values covering [min, max]. */
export function niceTicks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const span = max - min;
  let step = 10 ** Math.floor(Math.log10(span / count));
  const err = (count / span) * step;
  if (err <= 0.15) step *= 10;
  else if (err <= 0.35) step *= 5;
  else if (err <= 0.75) step *= 2;
  // multiples of step, rounded to its decimals (no 0.6000000000000001 from repeated adding)
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const out = [];
  for (let k = Math.ceil(min / step - 1e-9); k * step <= max + step * 1e-9; k += 1) {
    out.push(Number((k * step).toFixed(Math.min(decimals, 20))) || 0);
  }
  return out;
}

function timeLabel(ms, span) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  if (span > 2 * 86400e3) return `${d.getMonth() + 1}/${d.getDate()} ${p(d.getHours())}:${p(d.getMinutes())}`;
  const hms = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  // a run of a few seconds: tenths, so that ticks differ
  return span < 10e3 ? `${hms}.${Math.floor(d.getMilliseconds() / 100)}` : hms;
}

/** Axis numbers: 20k, 1.5M instead of 20000, 1500000. */
export function fmtTick(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${Number((v / 1e9).toPrecision(3))}G`;
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`;
  return fmtNum(v);
}

function fmtX(x, mode, span) {
  if (mode === 'time') return timeLabel(x, span);
  if (mode === 'relative') return fmtDuration(x);
  return fmtTick(x);
}

function nearest(points, x) {
  let lo = 0;
  let hi = points.length - 1;
  if (hi < 0) return -1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < x) lo = mid; else hi = mid;
  }
  return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? lo : hi;
}

/**
 * series: [{name, color, points: [[x, y], ...]}]; bands: [{color, points: [[x, lo, hi], ...]}]
 * xMode: 'step' | 'time' | 'relative'; logY; smoothing 0..0.99. Returns a div.chart.
 */
export function lineChart({ series, bands = [], xMode = 'step', logY = false, smoothing = 0, title = '', legend = false }) {
  const okY = (y) => Number.isFinite(y) && (!logY || y > 0);
  const clean = series.map((s) => {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && okY(p[1]));
    pts.sort((a, b) => a[0] - b[0]);
    return { ...s, points: pts, smooth: smoothing > 0 ? ema(pts, smoothing) : pts };
  });
  const cleanBands = bands.map((b) => ({ ...b, points: b.points.filter((p) => Number.isFinite(p[0]) && okY(p[1]) && okY(p[2])).sort((a, c) => a[0] - c[0]) }));
  const total = clean.reduce((n, s) => n + s.points.length, 0);
  const wrap = h('div', { class: 'chart', 'data-testid': 'chart', 'data-points': String(total), 'data-series': String(clean.length), 'data-x': xMode, 'data-log': logY ? '1' : '0' });
  if (!total) {
    wrap.appendChild(h('div', { class: 'chart-empty' }, logY ? 'No positive values to draw on a log scale.' : 'No points.'));
    return wrap;
  }

  let xmin = Infinity; let xmax = -Infinity; let ymin = Infinity; let ymax = -Infinity;
  const see = (x, y) => {
    if (x < xmin) xmin = x; if (x > xmax) xmax = x;
    if (y < ymin) ymin = y; if (y > ymax) ymax = y;
  };
  for (const s of clean) for (const p of s.points) see(p[0], p[1]);
  for (const b of cleanBands) for (const p of b.points) { see(p[0], p[1]); see(p[0], p[2]); }
  if (xmin === xmax) { xmin -= 1; xmax += 1; }
  const ty = logY ? Math.log10 : (v) => v;
  let lo = ty(ymin);
  let hi = ty(ymax);
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;

  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const sx = (x) => M.left + ((x - xmin) / (xmax - xmin)) * iw;
  const sy = (y) => M.top + ih - ((ty(y) - lo) / (hi - lo)) * ih;
  const pts = (arr, yi = 1) => {
    let s = '';
    for (const p of arr) s += `${sx(p[0]).toFixed(1)},${sy(p[yi]).toFixed(1)} `;
    return s;
  };

  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title || 'chart' });
  // y grid and labels
  const yAxis = h('g', { class: 'axis' });
  let yTicks;
  if (logY) {
    yTicks = [];
    for (let e = Math.ceil(lo); e <= Math.floor(hi); e += 1) yTicks.push(10 ** e);
    // less than a decade: round values in linear space, spaced unevenly on the log axis
    if (yTicks.length < 2) yTicks = niceTicks(10 ** lo, 10 ** hi, 4).filter((v) => v > 0);
  } else {
    yTicks = niceTicks(lo, hi, 5);
  }
  for (const v of yTicks) {
    const y = sy(v);
    if (y < M.top - 0.5 || y > M.top + ih + 0.5) continue;
    yAxis.append(
      h('line', { class: 'gridline', x1: M.left, x2: M.left + iw, y1: y, y2: y }),
      h('text', { x: M.left - 6, y: y + 3.5, 'text-anchor': 'end' }, fmtTick(v)));
  }
  const xAxis = h('g', { class: 'axis' });
  const span = xmax - xmin;
  let xTicks = niceTicks(xmin, xmax, xMode === 'step' ? 6 : 5);
  if (xMode === 'step') {
    // steps are integers: no 0.5 ticks on a short run
    xTicks = xTicks.filter((v) => Number.isInteger(v));
    if (xTicks.length < 2) xTicks = Array.from({ length: Math.floor(xmax) - Math.ceil(xmin) + 1 }, (_, k) => Math.ceil(xmin) + k);
  }
  for (const v of xTicks) {
    const x = sx(v);
    xAxis.append(
      h('line', { x1: x, x2: x, y1: M.top + ih, y2: M.top + ih + 4 }),
      h('text', { x, y: M.top + ih + 17, 'text-anchor': 'middle' }, fmtX(v, xMode, span)));
  }
  xAxis.append(h('line', { x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih }));
  svg.append(yAxis, xAxis);

  const plot = h('g', { 'clip-path': 'none' });
  for (const b of cleanBands) {
    if (!b.points.length) continue;
    const upper = pts(b.points, 2);
    const lower = pts([...b.points].reverse(), 1);
    plot.appendChild(h('polygon', { class: 'band', fill: b.color, points: `${upper}${lower}` }));
  }
  for (const s of clean) {
    if (smoothing > 0) plot.appendChild(h('polyline', { class: 'raw', stroke: s.color, points: pts(s.points) }));
    plot.appendChild(h('polyline', { class: 'line', stroke: s.color, points: pts(s.smooth), 'data-name': s.name, 'data-testid': 'chart-line', 'data-count': String(s.points.length) }));
    if (s.points.length <= 60) {
      for (const p of s.smooth) plot.appendChild(h('circle', { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.6, fill: s.color, class: 'pt' }));
    }
  }
  svg.appendChild(plot);

  // hover read-out
  const hover = h('line', { class: 'hover-line', y1: M.top, y2: M.top + ih, x1: -10, x2: -10, visibility: 'hidden' });
  const overlay = h('rect', { x: M.left, y: M.top, width: iw, height: ih, fill: 'transparent' });
  svg.append(hover, overlay);
  const tip = h('div', { class: 'chart-tip hidden' });
  if (clean.length > 1 || legend) {
    wrap.appendChild(h('div', { class: 'chart-legend' }, clean.map((s) => h('span', null, h('span', { class: 'swatch', style: { background: s.color } }), s.name))));
  }
  wrap.append(svg, tip);
  wrap.style.position = 'relative';
  overlay.addEventListener('mousemove', (ev) => {
    const box = svg.getBoundingClientRect();
    const scale = box.width / W;
    const px = (ev.clientX - box.left) / scale;
    const x = xmin + ((px - M.left) / iw) * (xmax - xmin);
    const lines = [];
    let at = null;
    for (const s of clean) {
      const i = nearest(s.smooth, x);
      if (i < 0) continue;
      const p = s.smooth[i];
      if (at === null) at = p[0];
      lines.push(h('div', null, h('span', { class: 'swatch', style: { background: s.color } }), `${s.name}: ${fmtNum(p[1])}`,
        smoothing > 0 ? h('span', { style: { opacity: 0.7 } }, ` (raw ${fmtNum(s.points[i][1])})`) : null));
    }
    if (at === null) return;
    hover.setAttribute('x1', sx(at)); hover.setAttribute('x2', sx(at)); hover.setAttribute('visibility', 'visible');
    tip.replaceChildren(h('div', { style: { opacity: 0.75 } }, xMode === 'step' ? `step ${at}` : fmtX(at, xMode, 0)), ...lines.slice(0, 12));
    tip.classList.remove('hidden');
    const left = sx(at) * scale;
    tip.style.top = `${8}px`;
    if (left > box.width * 0.6) { tip.style.left = ''; tip.style.right = `${box.width - left + 10}px`; } else { tip.style.right = ''; tip.style.left = `${left + 10}px`; }
  });
  overlay.addEventListener('mouseleave', () => { hover.setAttribute('visibility', 'hidden'); tip.classList.add('hidden'); });
  return wrap;
}

/** The shared chart controls: x axis, log scale, smoothing. onChange gets {x, log, smooth}. */
export function chartControls(settings, onChange) {
  const xSel = h('select', { 'data-testid': 'chart-x-axis', 'aria-label': 'X axis' },
    [['step', 'Step'], ['time', 'Wall time'], ['relative', 'Relative time']].map(([v, l]) => h('option', { value: v, selected: settings.x === v }, l)));
  const log = h('input', { type: 'checkbox', checked: settings.log, 'data-testid': 'chart-log' });
  const smooth = h('input', { type: 'range', min: '0', max: '0.99', step: '0.01', value: String(settings.smooth), 'data-testid': 'chart-smoothing', 'aria-label': 'Smoothing' });
  const smoothVal = h('span', { class: 'mono', style: { minWidth: '34px', display: 'inline-block' } }, Number(settings.smooth).toFixed(2));
  const fire = () => onChange({ x: xSel.value, log: log.checked, smooth: Number(smooth.value) });
  xSel.addEventListener('change', fire);
  log.addEventListener('change', fire);
  smooth.addEventListener('input', () => { smoothVal.textContent = Number(smooth.value).toFixed(2); });
  smooth.addEventListener('change', fire);
  return h('div', { class: 'chart-controls', 'data-testid': 'chart-controls' },
    h('label', { class: 'inline' }, 'X axis', xSel),
    h('label', { class: 'inline' }, log, 'Log scale (y)'),
    h('label', { class: 'inline' }, 'Smoothing', smooth, smoothVal));
}

/** Points of the server (x = step or epoch ms) in the chosen mode: relative time starts at 0. */
export function toMode(points, mode, origin) {
  if (mode !== 'relative') return points;
  const o = origin ?? (points.length ? points[0][0] : 0);
  return points.map((p) => [p[0] - o, p[1]]);
}
