// #/models/<name>/<version> : one model version: details, signature, the run it came from, stage
// transitions (archive-existing, confirmation) and aliases set with compare-and-set: when the alias
// moved since the page was loaded, the server answers 409 and the page says where it points now.
import * as api from './api.js';
import { h, mount, fmtTime, badge, busy, confirmDialog, toast, shortId } from './dom.js';
import { href } from './router.js';
import { signatureView } from './mlmodel.js';
import { timeline } from './page-model.js';

const STAGES = ['None', 'Staging', 'Production', 'Archived'];

export async function render({ el, params }) {
  const name = params.name;
  const version = params.version;

  async function load() {
    const [v, m] = await Promise.all([
      api.get(`/models/${api.enc(name)}/versions/${api.enc(version)}`),
      api.get(`/models/${api.enc(name)}`),
    ]);
    draw(v, m);
  }

  function draw(v, m) {
    const stage = v.stage || 'None';
    const aliasesNow = { ...(m.aliases || {}) }; // alias → version, as loaded: the compare-and-set baseline
    const mine = Object.entries(aliasesNow).filter(([, ver]) => String(ver) === String(v.version)).map(([a]) => a);
    const mayManage = api.can(m.permission, 'MANAGE');
    const others = (m.versions || []).filter((o) => String(o.version) !== String(v.version));

    // ---- stage transition ------------------------------------------------------------------
    let stageBox = null;
    let aliasBox = null;
    if (mayManage) {
      const targets = STAGES.filter((s) => s !== stage);
      const select = h('select', { 'data-testid': 'stage-select', 'aria-label': 'New stage' }, targets.map((s) => h('option', { value: s, selected: s === (stage === 'Production' ? 'Archived' : 'Production') }, s)));
      const archive = h('input', { type: 'checkbox', 'data-testid': 'archive-existing' });
      const archiveLabel = h('label', { class: 'inline' }, archive, 'Archive the versions now in that stage');
      const syncArchive = () => {
        const ok = select.value === 'Production' || select.value === 'Staging';
        archive.disabled = !ok;
        if (!ok) archive.checked = false;
        archiveLabel.classList.toggle('muted', !ok);
      };
      const gated = new Set(m.approval_required_stages || []);
      const approvalNote = h('div', { class: 'note warn hidden', 'data-testid': 'approval-note' });
      const syncApproval = () => {
        approvalNote.textContent = `${select.value} needs an approved transition request on this model: a direct move will be refused.`;
        approvalNote.classList.toggle('hidden', !gated.has(select.value));
      };
      select.addEventListener('change', syncArchive);
      select.addEventListener('change', syncApproval);
      syncArchive();
      syncApproval();
      const go = h('button', {
        class: 'primary', 'data-testid': 'transition-stage',
        onclick: async () => {
          const target = select.value;
          const displaced = others.filter((o) => (o.stage || 'None') === target);
          const msg = [h('p', null, `Move ${name} version ${v.version} from ${stage} to `, h('strong', null, target), '?')];
          if (archive.checked && displaced.length) {
            msg.push(h('p', { class: 'note warn' }, `Also archives ${displaced.map((o) => `version ${o.version}`).join(', ')} (now in ${target}).`));
          } else if (displaced.length && target !== 'Archived' && target !== 'None') {
            msg.push(h('p', { class: 'muted' }, `${displaced.map((o) => `Version ${o.version}`).join(', ')} stay${displaced.length === 1 ? 's' : ''} in ${target} too.`));
          }
          if (target === 'Production') msg.push(h('p', { class: 'muted small' }, 'Deployments that follow the Production stage will switch to this version.'));
          const ok = await confirmDialog(msg, { ok: `Move to ${target}`, title: 'Transition stage' });
          if (!ok) return;
          await busy(go, async () => {
            await api.post(`/models/${api.enc(name)}/versions/${api.enc(v.version)}/stage`, { stage: target, archive_existing: archive.checked });
            toast(`Version ${v.version} is now in ${target}`);
            await load();
          });
        },
      }, 'Transition…');
      stageBox = h('section', { class: 'panel', 'data-testid': 'stage-panel' }, h('h2', null, 'Stage'),
        h('div', { class: 'form-row' }, h('span', null, 'Current: '), badge(stage)),
        h('div', { class: 'form-row' }, h('label', { class: 'inline' }, 'Move to', select), archiveLabel),
        approvalNote,
        go);

      // ---- aliases (compare-and-set) --------------------------------------------------------
      const aliasInput = h('input', { type: 'text', placeholder: 'alias, e.g. champion', list: 'keel-aliases', 'data-testid': 'alias-name', 'aria-label': 'Alias' });
      const result = h('div', { 'data-testid': 'alias-result' });
      const setBtn = h('button', { class: 'primary', type: 'submit', 'data-testid': 'set-alias' }, 'Point alias here');
      const setAlias = async (alias) => {
        const expected = Object.prototype.hasOwnProperty.call(aliasesNow, alias) ? Number(aliasesNow[alias]) : 0;
        mount(result);
        try {
          await api.put(`/models/${api.enc(name)}/aliases/${api.enc(alias)}`, { version: Number(v.version), expected_version: expected });
        } catch (err) {
          if (err.status !== 409) throw err;
          let now = Number.isInteger(err.body.current_version) ? err.body.current_version : null;
          if (now === null) {
            try {
              const fresh = await api.get(`/models/${api.enc(name)}`);
              now = (fresh.aliases || {})[alias] ?? null;
            } catch { /* the server's message names it too */ }
          }
          mount(result, h('div', { class: 'note bad', 'data-testid': 'alias-conflict', 'data-now': now ?? '' },
            h('strong', null, `@${alias} was moved meanwhile`),
            now !== null ? [': it now points at ', h('a', { href: href(['models', name, now]), 'data-testid': 'alias-now-link' }, `version ${now}`)] : '',
            '. Nothing was changed. ', h('span', { class: 'muted' }, `(${err.message})`), ' ',
            h('button', { class: 'link', 'data-testid': 'alias-reload', onclick: () => load() }, 'Reload and decide again')));
          return;
        }
        toast(`@${alias} now points at version ${v.version}`);
        await load();
      };
      const form = h('form', {
        class: 'form-row',
        onsubmit: (e) => {
          e.preventDefault();
          const alias = aliasInput.value.trim().replace(/^@/, '');
          if (!alias) { aliasInput.focus(); return; }
          busy(setBtn, () => setAlias(alias));
        },
      }, aliasInput, h('datalist', { id: 'keel-aliases' }, Object.keys(aliasesNow).map((a) => h('option', { value: a }))), setBtn);
      const elsewhere = Object.entries(aliasesNow).filter(([, ver]) => String(ver) !== String(v.version));
      aliasBox = h('section', { class: 'panel', 'data-testid': 'alias-panel' }, h('h2', null, 'Aliases'),
        h('p', { class: 'muted small' }, 'Setting an alias checks that it still points where it did when this page loaded; if someone moved it meanwhile, nothing is overwritten.'),
        form,
        elsewhere.length ? h('div', { class: 'form-row' }, h('span', { class: 'muted' }, 'Move here:'),
          elsewhere.map(([a, ver]) => h('button', { 'data-testid': 'move-alias', 'data-alias': a, onclick: (e) => busy(e.currentTarget, () => setAlias(a)) }, `@${a} (now v${ver})`))) : null,
        result);
    }

    const aliasChips = mine.length ? mine.map((a) => h('span', { class: 'chip', 'data-testid': 'version-alias', 'data-alias': a }, `@${a}`,
      mayManage ? h('button', {
        title: `Remove @${a}`, 'aria-label': `Remove alias ${a}`, 'data-testid': 'delete-alias',
        onclick: async (e) => {
          if (!(await confirmDialog(`Remove the alias @${a} from version ${v.version}?`, { ok: 'Remove', danger: true }))) return;
          busy(e.currentTarget, async () => { await api.del(`/models/${api.enc(name)}/aliases/${api.enc(a)}`); toast(`Removed @${a}`); await load(); });
        },
      }, '✕') : null)) : h('span', { class: 'muted' }, 'none');

    mount(el,
      h('div', { class: 'page-head' }, h('div', null,
        h('div', { class: 'crumbs' }, h('a', { href: '#/models' }, 'Models'), ' / ', h('a', { href: href(['models', name]), 'data-testid': 'model-link' }, name)),
        h('h1', { 'data-testid': 'version-title' }, `${name} · version ${v.version} `, h('span', { 'data-testid': 'version-stage', 'data-stage': stage }, stage === 'None' ? null : badge(stage))),
        h('div', { class: 'sub' }, v.description || ''))),
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h2', null, 'Details'),
          h('dl', { class: 'kv', 'data-testid': 'version-details' },
            h('dt', null, 'Stage'), h('dd', null, badge(stage)),
            h('dt', null, 'Status'), h('dd', null, badge(v.status || '—')),
            h('dt', null, 'Aliases'), h('dd', { 'data-testid': 'version-aliases' }, aliasChips),
            h('dt', null, 'Source run'), h('dd', null, v.run_id ? h('a', { href: href(['run', v.run_id]), 'data-testid': 'source-run-link', class: 'mono' }, shortId(v.run_id)) : '—'),
            h('dt', null, 'Source'), h('dd', { class: 'mono small' }, v.source || '—'),
            h('dt', null, 'Created'), h('dd', null, fmtTime(v.creation_time)),
            h('dt', null, 'Updated'), h('dd', null, fmtTime(v.last_updated_time)),
            h('dt', null, 'Tags'), h('dd', null, Object.keys(v.tags || {}).length ? Object.entries(v.tags).map(([k, val]) => h('span', { class: 'chip tag' }, `${k}: ${val}`)) : h('span', { class: 'muted' }, 'none')))),
        mayManage ? h('div', null, stageBox, aliasBox)
          : h('section', { class: 'panel' }, h('h2', null, 'Stage and aliases'),
            h('div', { class: 'note warn', 'data-testid': 'no-manage-note' },
              `Your access to this model is ${m.permission || 'limited'}: moving it between stages and setting aliases need MANAGE.`),
            h('p', { class: 'muted small' }, 'Ask an owner of the model for MANAGE, or for a transition request.'))),
      h('section', { class: 'panel' }, h('h2', null, 'Signature'), signatureView(v.signature)),
      h('section', { class: 'panel' }, h('h2', null, 'History of this model'),
        timeline((m.history || []).filter((ev) => String(ev.version) === String(v.version) || (ev.kind || '').startsWith('alias')))));
  }

  await load();
  return {};
}
