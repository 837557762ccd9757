// app.js — the dashboard's pages (preact + htm, no build step): overview, modules with their
// logs, deployment (validate, plan as a diff, apply, history and rollback to any entry), twins
// and direct methods, the hub, charts of the last hour, VMs, other devices and the fleet (this
// device and the others side by side). Routing is the URL's hash: #/overview, #/modules,
// #/modules/NAME, #/deployment, #/twins[/modules/M|/devices/D], #/hub, #/charts, #/vms,
// #/vms/NAME, #/devices, #/fleet.
import {h, render, Component} from './preact.js';
import htm from './htm.js';
import * as api from './api.js';
import uPlot from './uplot.js';

const html = htm.bind(h);

const bytes = (n) => {
  if (n == null || n < 0) return '?';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

// A line diff (longest common subsequence) of two texts: [[' '|'-'|'+', line]].
export function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  const n = x.length, m = y.length;
  if (n * m > 4e6) return [...x.map((l) => ['-', l]), ...y.map((l) => ['+', l])];
  const t = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      t[i][j] = x[i] === y[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([' ', x[i]]); i++; j++; }
    else if (t[i + 1][j] >= t[i][j + 1]) out.push(['-', x[i++]]);
    else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

// {"running": 2, "failed": 1} → "2 running, 1 failed" (objects shown as JSON).
const counts = (o) => typeof o !== 'object' ? String(o) : Object.entries(o).map(([k, v]) =>
  typeof v === 'number' ? `${v} ${k}` : `${k}: ${JSON.stringify(v)}`).join(', ') || 'none';

// The diff with runs of unchanged lines longer than 2 * CONTEXT folded into one "…" line.
const CONTEXT = 3;
export function foldDiff(d) {
  const out = [];
  for (let i = 0; i < d.length;) {
    let j = i;
    while (j < d.length && d[j][0] === ' ') j++;
    const run = j - i;
    if (run > 2 * CONTEXT + 1) {
      const head = i === 0 ? 0 : CONTEXT, tail = j === d.length ? 0 : CONTEXT;
      out.push(...d.slice(i, i + head), ['…', `${run - head - tail} unchanged lines`],
               ...d.slice(j - tail, j));
    } else out.push(...d.slice(i, j));
    for (i = j; i < d.length && d[i][0] !== ' '; i++) out.push(d[i]);
  }
  return out;
}

const pretty = (text) => {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
};

// "modules.x.settings.image: must be a string" → path and message.
const splitError = (e) => {
  const m = /^([A-Za-z0-9_$.\[\]\-"' ]+?): (.*)$/s.exec(e);
  return m ? {path: m[1], message: m[2]} : {path: '', message: e};
};

function Err({error}) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

/* ------------------------------------------------------------------ overview */

class Overview extends Component {
  async componentDidMount() {
    const [sys, status, host] = await Promise.all(
        ['/systeminfo', '/status', '/api-host'].map((p) => api.json('GET', p === '/api-host' ? '/host' : p)));
    this.setState({sys: sys.body, status: status.body, host: host.body});
    const check = await api.json('GET', '/check');
    this.setState({check: check.ok ? check.body : null, checkError: check.ok ? null : check.body.message});
  }
  render(_, {sys, status, host, check, checkError}) {
    if (!sys) return html`<p>Loading…</p>`;
    const e = sys.engine || {};
    const mem = host && host.memory;
    const disk = host && host.disk;
    return html`<section>
      <h2>Device</h2>
      <dl class="facts">
        <dt>Device</dt><dd id="device-id">${sys.deviceId}</dd>
        <dt>IoT Hub</dt><dd>${sys.iothubHostname || '—'}</dd>
        <dt>Gateway host name</dt><dd>${sys.gatewayHostname}</dd>
        <dt>ledge</dt><dd id="version">${sys.version}</dd>
        <dt>OS</dt><dd>${sys.osName} (${sys.kernelVersion}, ${sys.architecture})</dd>
        <dt>Engine</dt><dd id="engine">${e.type} ${e.product || ''} ${e.version || ''} — ${e.connected ? 'connected' : 'not connected'}</dd>
        ${host && html`
        <dt>CPU</dt><dd>${host.cpus} CPUs, load ${host.loadAverage.map((l) => l.toFixed(2)).join(' ')}</dd>
        <dt>Memory</dt><dd>${bytes(mem.availableBytes)} free of ${bytes(mem.totalBytes)}</dd>
        <dt>Disk</dt><dd>${disk ? `${bytes(disk.availableBytes)} free of ${bytes(disk.totalBytes)} (${disk.path})` : '?'}</dd>`}
        ${status && status.modules && html`<dt>Modules</dt><dd id="module-counts">${counts(status.modules)}</dd>`}
      </dl>
      <h2>ledge check</h2>
      <${Err} error=${checkError}/>
      ${!check && !checkError && html`<p>Running the checks…</p>`}
      ${check && html`<${Checks} check=${check}/>`}
    </section>`;
  }
}

function Checks({check}) {
  const results = check.checks || check.results || [];
  const tiers = check.tiers || check.summary;
  return html`<div>
    ${tiers && html`<p id="check-summary">${counts(tiers)}</p>`}
    <table class="checks"><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead><tbody>
      ${results.map((c) => html`<tr class=${'r-' + (c.result || c.status)}>
        <td>${c.id || c.name}</td><td>${c.result || c.status}</td>
        <td>${c.message || c.detail || ''}${c.fix ? html`<div class="fix">fix: ${c.fix}</div>` : ''}</td></tr>`)}
    </tbody></table></div>`;
}

/* ------------------------------------------------------------------ modules */

class Modules extends Component {
  componentDidMount() { this.load(); this.timer = setInterval(() => this.load(), 2000); }
  componentWillUnmount() { clearInterval(this.timer); }
  async load() {
    const r = await api.json('GET', '/modules');
    this.setState(r.ok ? {modules: r.body.modules, error: null} : {error: r.body.message});
  }
  async command(name, verb) {
    this.setState({busy: `${name}:${verb}`, error: null});
    const r = await api.json('POST', `/modules/${encodeURIComponent(name)}/${verb}`);
    this.setState({busy: null, error: r.ok ? null : `${verb} ${name}: ${r.body.message}`});
    this.load();
  }
  render(_, {modules, error, busy}) {
    return html`<section>
      <h2>Modules</h2>
      <${Err} error=${error}/>
      <table class="modules"><thead><tr>
        <th>name</th><th>type</th><th>desired</th><th>runtime status</th><th>restarts</th><th>image</th><th></th>
      </tr></thead><tbody>
      ${(modules || []).map((m) => html`<tr data-module=${m.name}>
        <td><a href=${'#/modules/' + encodeURIComponent(m.name)}>${m.name}</a></td>
        <td>${m.type}</td><td>${m.status}</td>
        <td class=${'status s-' + m.runtimeStatus} title=${m.statusDescription}>${m.runtimeStatus}</td>
        <td class="restarts">${m.restartCount}</td><td class="small">${m.image}</td>
        <td class="actions">${['start', 'stop', 'restart'].map((v) => html`
          <button disabled=${busy === `${m.name}:${v}`} onClick=${() => this.command(m.name, v)}>${v}</button>`)}</td>
      </tr>`)}
      </tbody></table>
      ${modules && !modules.length && html`<p>No modules: deploy something.</p>`}
    </section>`;
  }
}

class Logs extends Component {
  constructor(props) {
    super(props);
    this.state = {lines: [], follow: true, search: '', tail: 200};
  }
  componentDidMount() { this.start(); }
  componentWillUnmount() { this.stop(); }
  stop() { if (this.abort) this.abort.abort(); this.abort = null; }
  async start() {
    this.stop();
    const ctl = new AbortController();
    this.abort = ctl;
    const {follow, tail} = this.state;
    this.setState({lines: [], error: null});
    const path = `/modules/${encodeURIComponent(this.props.name)}/logs?tail=${tail}${follow ? '&follow=1' : ''}`;
    const got = [];
    let pending = false;
    const flush = () => { pending = false; if (this.abort === ctl) this.setState({lines: got.slice(-5000)}); };
    try {
      const r = await api.lines('GET', path, undefined, (l) => {
        got.push(l);
        if (!pending) { pending = true; requestAnimationFrame(flush); }
      }, ctl.signal);
      if (!r.ok) this.setState({error: r.body.message});
      flush();
    } catch (e) {
      if (e.name !== 'AbortError') this.setState({error: String(e)});
    }
  }
  download() {
    const blob = new Blob([this.state.lines.join('\n') + '\n'], {type: 'text/plain'});
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${this.props.name}.log`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }
  render({name}, {lines, follow, search, error}) {
    const shown = search ? lines.filter((l) => l.toLowerCase().includes(search.toLowerCase())) : lines;
    return html`<section>
      <h2>Logs of ${name}</h2>
      <div class="toolbar">
        <label><input type="checkbox" id="follow" checked=${follow}
          onChange=${(e) => this.setState({follow: e.target.checked}, () => this.start())}/> follow</label>
        <input type="search" id="log-search" placeholder="search" value=${search}
          onInput=${(e) => this.setState({search: e.target.value})}/>
        <button id="log-download" onClick=${() => this.download()}>download</button>
        <span class="small">${shown.length} of ${lines.length} lines</span>
      </div>
      <${Err} error=${error}/>
      <pre id="logs" class="logs">${shown.join('\n')}</pre>
    </section>`;
  }
}

function ModulePage({name}) {
  return html`<div><p><a href="#/modules">← all modules</a></p><${ModuleActions} name=${name}/><${Logs} name=${name}/></div>`;
}

class ModuleActions extends Component {
  componentDidMount() { this.load(); this.timer = setInterval(() => this.load(), 2000); }
  componentWillUnmount() { clearInterval(this.timer); }
  async load() {
    const r = await api.json('GET', `/modules/${encodeURIComponent(this.props.name)}`);
    this.setState(r.ok ? {m: r.body} : {error: r.body.message});
  }
  async command(verb) {
    const r = await api.json('POST', `/modules/${encodeURIComponent(this.props.name)}/${verb}`);
    this.setState({error: r.ok ? null : r.body.message});
    this.load();
  }
  render(_, {m, error}) {
    return html`<div>
      <${Err} error=${error}/>
      ${m && html`<p>status <b id="module-status" class=${'s-' + m.runtimeStatus}>${m.runtimeStatus}</b>
        (desired ${m.status}), restarts <span id="module-restarts">${m.restartCount}</span>
        <span class="actions">${['start', 'stop', 'restart'].map((v) => html`
          <button id=${'module-' + v} onClick=${() => this.command(v)}>${v}</button>`)}</span></p>`}
    </div>`;
  }
}

/* ------------------------------------------------------------------ deployment */

class Deployment extends Component {
  constructor(props) {
    super(props);
    this.state = {text: '', current: '', errors: null, plan: null, events: [], history: null};
  }
  async componentDidMount() {
    const r = await api.call('GET', '/deployment');
    const current = r.ok ? pretty(await r.text()) : '';
    this.setState({current, text: this.state.text || current});
    this.loadHistory();
  }
  async loadHistory() {
    const h = await api.json('GET', '/deployments');
    this.setState({history: h.ok ? h.body : null});
  }
  upload(e) {
    const f = e.target.files[0];
    if (!f) return;
    f.text().then((text) => this.setState({text, errors: null, plan: null}));
  }
  async validate() {
    this.setState({errors: null, plan: null, events: [], message: null});
    const r = await api.json('POST', '/deployment?dryRun=1', this.state.text);
    if (!r.ok) {
      const errs = r.body.errors && r.body.errors.length ? r.body.errors : [r.body.message];
      this.setState({errors: errs.map(splitError)});
      return;
    }
    this.setState({plan: r.body.plan || [], warnings: r.body.warnings || []});
  }
  async apply() {
    this.setState({events: [], applying: true, outcome: null});
    const events = [];
    const r = await api.lines('POST', '/deployment?wait=1', this.state.text, (l) => {
      if (!l.trim()) return;
      let ev; try { ev = JSON.parse(l); } catch (e) { ev = {event: 'text', line: l}; }
      events.push(ev);
      this.setState({events: events.slice()});
    });
    const last = events[events.length - 1];
    this.setState({applying: false, plan: null,
                   outcome: !r.ok ? `refused: ${r.body.message}` : last && last.ok ? 'applied' : 'failed'});
    if (!r.ok && r.body.errors) this.setState({errors: r.body.errors.map(splitError)});
    this.componentDidMount();
  }
  // Rolling back to deployment N of the history: first its plan (POST /deployment/rollback?to=N
  // with dryRun: validated again, as an upload is), then, confirmed, the same call with wait=1,
  // whose events stream in as an apply's do. The management API applies N as a deployment of its
  // own (kind rollback), atomic and watched.
  async planRollback(id) {
    this.setState({events: [], outcome: null, errors: null, plan: null, rollbackPlan: null});
    const r = await api.json('POST', `/deployment/rollback?to=${id}&dryRun=1`);
    if (!r.ok) {
      const errs = r.body.errors && r.body.errors.length ? r.body.errors : [r.body.message];
      this.setState({errors: errs.map(splitError), outcome: `roll back to ${id} refused`});
      return;
    }
    const m = await api.call('GET', `/deployments/${id}`);
    const text = m.ok ? pretty(await m.text()) : null;
    this.setState({rollbackPlan: {id, plan: r.body.plan || [], warnings: r.body.warnings || [],
                                  diff: text == null ? null : foldDiff(diffLines(this.state.current, text))}});
  }
  async rollback(id) {
    this.setState({events: [], applying: true, outcome: null, errors: null, plan: null, rollbackPlan: null});
    const events = [];
    const r = await api.lines('POST', `/deployment/rollback?to=${id}&wait=1`, undefined, (l) => {
      if (!l.trim()) return;
      let ev; try { ev = JSON.parse(l); } catch (e) { ev = {event: 'text', line: l}; }
      events.push(ev);
      this.setState({events: events.slice()});
    });
    const last = events[events.length - 1];
    this.setState({applying: false, text: '',
                   outcome: !r.ok ? `rollback refused: ${r.body.message}`
                                  : last && last.ok ? `rolled back to ${id}` : 'rollback failed'});
    this.componentDidMount();
  }
  render(_, {text, current, errors, plan, events, outcome, applying, history, warnings, rollbackPlan}) {
    const diff = plan ? foldDiff(diffLines(current, pretty(text))) : null;
    return html`<section>
      <h2>Deployment</h2>
      <div class="toolbar">
        <label class="button">upload a manifest <input type="file" id="manifest-file" accept=".json,application/json" onChange=${(e) => this.upload(e)}/></label>
        <button id="validate" onClick=${() => this.validate()}>validate and plan</button>
        <button id="apply" disabled=${!plan || applying} onClick=${() => this.apply()}>apply</button>
        ${outcome && html`<span id="outcome" class="outcome">${outcome}</span>`}
      </div>
      <textarea id="manifest" spellcheck="false" value=${text}
        onInput=${(e) => this.setState({text: e.target.value, plan: null, errors: null})}></textarea>
      ${errors && html`<div id="errors" class="errors"><h3>The manifest is not valid</h3><ul>
        ${errors.map((e) => html`<li><code class="path">${e.path || '(manifest)'}</code> ${e.message}</li>`)}</ul></div>`}
      ${plan && html`<div id="plan"><h3>Plan</h3>
        <${Plan} plan=${plan} warnings=${warnings}/>
        <h3>Manifest diff</h3>
        <${Diff} diff=${diff}/></div>`}
      ${rollbackPlan && html`<div id="rollback-plan"><h3>Plan: roll back to deployment ${rollbackPlan.id}</h3>
        <${Plan} plan=${rollbackPlan.plan} warnings=${rollbackPlan.warnings}/>
        ${rollbackPlan.diff && html`<h3>Manifest diff</h3><${Diff} diff=${rollbackPlan.diff}/>`}
        <div class="toolbar"><button id="rollback-apply" disabled=${applying} onClick=${() => this.rollback(rollbackPlan.id)}>roll back to ${rollbackPlan.id}</button>
          <button id="rollback-cancel" onClick=${() => this.setState({rollbackPlan: null})}>cancel</button></div></div>`}
      ${events.length > 0 && html`<div id="events"><h3>Applying</h3><pre class="small">${events.map((e) => JSON.stringify(e)).join('\n')}</pre></div>`}
      <h2>History</h2>
      ${history ? html`<${History} history=${history} busy=${applying} onRollback=${(id) => this.planRollback(id)}/>`
                : html`<p class="small">No deployment history on this ledged.</p>`}
    </section>`;
  }
}

function Diff({diff}) {
  return html`<pre class="diff">${diff.map(([k, l]) => html`<span class=${'d' + ({'+': 'add', '-': 'del', '…': 'fold'}[k] || 'same')}>${k + ' ' + l}</span>`)}</pre>`;
}

function Plan({plan, warnings}) {
  return html`<div>
    ${plan.length ? html`<ul class="plan">${plan.map((s) => html`<li class=${'a-' + s.action}>
      <b>${s.action}</b> ${s.module} <span class="small">${s.reason}</span></li>`)}</ul>` : html`<p>Nothing changes.</p>`}
    ${(warnings || []).map((w) => html`<p class="warn">${typeof w === 'string' ? w : JSON.stringify(w)}</p>`)}</div>`;
}

// GET /deployments: {current, previous, inProgress, deployments: [{id, kind, startedAt, finishedAt,
// outcome, reason, modules: [{module, reason}], previous, rollback, canApply}]}, newest first.
// Every row but the one in force whose manifest is kept has "roll back to N": its plan first.
function History({history, busy, onRollback}) {
  const list = history.deployments || [];
  if (!list.length) return html`<p class="small">Nothing was deployed yet.</p>`;
  return html`<table id="history" class="history"><thead><tr>
      <th>id</th><th>kind</th><th>started</th><th>outcome</th><th>reason</th><th></th></tr></thead><tbody>
    ${list.map((d) => html`<tr data-id=${d.id} class=${d.id === history.current ? 'current' : ''}>
      <td>${d.id}</td><td>${d.kind}</td><td class="small">${d.startedAt}</td>
      <td class=${'o-' + d.outcome}>${d.outcome}${d.id === history.current ? ' (in force)' : ''}</td>
      <td class="small">${d.reason || ''}${(d.modules || []).map((m) => html`<div>${m.module}: ${m.reason}</div>`)}</td>
      <td>${d.id !== history.current && d.canApply !== false && html`
        <button class="rollback" disabled=${busy || history.inProgress != null}
          onClick=${() => onRollback(d.id)}>roll back to ${d.id}</button>`}</td></tr>`)}
    </tbody></table>`;
}

/* ------------------------------------------------------------------ twins and methods */

// The twin and direct methods of a module of the deployment or of a leaf device of this gateway:
// GET/PATCH /modules/M/twin and POST /modules/M/methods/NAME?timeout=S (/devices/D/... for a
// leaf device; the hub answers them, hub_proxy.c). The desired patch is merged as `ledge twin set`
// merges it (null removes a key); what the hub refuses is shown with its reason.
class Twins extends Component {
  constructor(props) {
    super(props);
    this.state = {target: props.target || '', patch: '{\n  \n}', method: '', payload: '{}', timeout: '10'};
  }
  async componentDidMount() {
    const [m, d] = await Promise.all([api.json('GET', '/modules'), api.json('GET', '/devices')]);
    const targets = [];
    if (m.ok) for (const x of m.body.modules || []) if (x.name !== 'edgeAgent') targets.push(`modules/${x.name}`);
    if (d.ok) for (const x of d.body.devices || []) if (!x.error) targets.push(`devices/${x.deviceId}`);
    this.setState({targets, listError: m.ok ? null : m.body.message});
    if (this.state.target) this.load();
  }
  path() {
    const [kind, ...rest] = this.state.target.split('/');
    return `/${kind}/${encodeURIComponent(rest.join('/'))}`;
  }
  async load() {
    if (!this.state.target) return;
    const r = await api.json('GET', `${this.path()}/twin`);
    this.setState(r.ok ? {twin: r.body, twinError: null} : {twin: null, twinError: r.body.message});
  }
  select(target) {
    this.setState({target, twin: null, twinError: null, patchError: null, patched: null, result: null,
                   invokeError: null}, () => this.load());
    history.replaceState(null, '', `#/twins/${target}`);
  }
  async patchDesired() {
    this.setState({patchError: null, patched: null});
    let body;
    try { body = JSON.parse(this.state.patch); } catch (e) {
      this.setState({patchError: `not valid JSON: ${e.message}`});
      return;
    }
    const r = await api.json('PATCH', `${this.path()}/twin`, JSON.stringify(body));
    if (!r.ok) { this.setState({patchError: `${r.status}: ${r.body.message}`}); return; }
    this.setState({patched: 'desired properties updated'});
    this.load();
  }
  async invoke() {
    const {method, payload, timeout} = this.state;
    this.setState({invokeError: null, result: null, invoking: true});
    let body;
    try { body = JSON.parse(payload || 'null'); } catch (e) {
      this.setState({invokeError: `payload: not valid JSON: ${e.message}`, invoking: false});
      return;
    }
    if (!method) { this.setState({invokeError: 'a method name is needed', invoking: false}); return; }
    const t0 = performance.now();
    const r = await api.json('POST', `${this.path()}/methods/${encodeURIComponent(method)}?timeout=${encodeURIComponent(timeout)}`,
                             JSON.stringify(body));
    const ms = Math.round(performance.now() - t0);
    this.setState({invoking: false, result: r.ok ? {status: r.body.status, payload: r.body.payload, ms} : null,
                   invokeError: r.ok ? null : `${r.status}: ${r.body.message}`});
  }
  render(_, {targets, target, twin, twinError, listError, patch, patchError, patched, method, payload,
             timeout, result, invokeError, invoking}) {
    const part = (k) => twin && JSON.stringify(twin[k] === undefined ? {} : twin[k], null, 2);
    return html`<section>
      <h2>Twins and direct methods</h2>
      <${Err} error=${listError}/>
      <div class="toolbar"><label>module or leaf device
        <select id="twin-target" value=${target} onChange=${(e) => this.select(e.target.value)}>
          <option value="">—</option>
          ${(targets || []).map((t) => html`<option value=${t}>${t.replace(/^modules\//, 'module ').replace(/^devices\//, 'leaf device ')}</option>`)}
        </select></label>
        ${target && html`<button id="twin-refresh" onClick=${() => this.load()}>refresh</button>`}</div>
      ${target && html`<div>
        <${Err} error=${twinError}/>
        ${twin && html`<div class="cols">
          <div><h3>Desired</h3><pre id="twin-desired" class="small">${part('desired')}</pre></div>
          <div><h3>Reported</h3><pre id="twin-reported" class="small">${part('reported')}</pre></div></div>`}
        <h3>Update desired properties</h3>
        <p class="small">A JSON object merged into the desired properties (a key set to null is
          removed), as <code>ledge twin set</code> does.</p>
        <textarea id="twin-patch" class="short" spellcheck="false" value=${patch}
          onInput=${(e) => this.setState({patch: e.target.value, patchError: null, patched: null})}></textarea>
        <div class="toolbar"><button id="twin-update" onClick=${() => this.patchDesired()}>update desired</button>
          ${patched && html`<span id="twin-patched" class="outcome">${patched}</span>`}</div>
        ${patchError && html`<p id="twin-patch-error" class="error" role="alert">${patchError}</p>`}
        <h3>Invoke a direct method</h3>
        <div class="toolbar">
          <input id="method-name" placeholder="method" value=${method} onInput=${(e) => this.setState({method: e.target.value})}/>
          <label>timeout <input id="method-timeout" type="number" min="1" max="300" value=${timeout}
            onInput=${(e) => this.setState({timeout: e.target.value})}/> s</label>
          <button id="method-invoke" disabled=${invoking} onClick=${() => this.invoke()}>invoke</button>
          ${invoking && html`<span class="small">waiting for the answer…</span>`}</div>
        <textarea id="method-payload" class="short" spellcheck="false" value=${payload}
          onInput=${(e) => this.setState({payload: e.target.value})}></textarea>
        ${invokeError && html`<p id="method-error" class="error" role="alert">${invokeError}</p>`}
        ${result && html`<div id="method-result"><p>status <b id="method-status">${result.status}</b>
          <span class="small">in ${result.ms} ms</span></p>
          <pre id="method-response" class="small">${JSON.stringify(result.payload, null, 2)}</pre></div>`}
      </div>`}
    </section>`;
  }
}

/* ------------------------------------------------------------------ hub */

// A value in a table cell: scalars as they are, objects and arrays as compact JSON.
const cell = (v) => v == null ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v);

// An object as a two-column table (nested objects one level down as "a.b").
function KV({o, id}) {
  const rows = [];
  for (const [k, v] of Object.entries(o || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) rows.push([`${k}.${k2}`, v2]);
    else rows.push([k, v]);
  }
  return html`<table id=${id} class="kv"><tbody>${rows.map(([k, v]) => html`<tr data-key=${k}><th>${k}</th><td>${cell(v)}</td></tr>`)}</tbody></table>`;
}

// An array of objects as a table, its columns the union of their keys (first seen first).
function Rows({rows, id, empty}) {
  if (!rows || !rows.length) return html`<p class="small">${empty}</p>`;
  const cols = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  return html`<table id=${id}><thead><tr>${cols.map((c) => html`<th>${c}</th>`)}</tr></thead><tbody>
    ${rows.map((r) => html`<tr>${cols.map((c) => html`<td data-col=${c}>${cell(r[c])}</td>`)}</tr>`)}</tbody></table>`;
}

// GET /hub/status (`ledge hub status`, docs/hub.md) as tables: the upstream link, connections
// and sessions, one row per endpoint queue and priority, the counters, the store, the refusals.
class Hub extends Component {
  componentDidMount() { this.load(); this.timer = setInterval(() => this.load(), 3000); }
  componentWillUnmount() { clearInterval(this.timer); }
  async load() {
    const r = await api.json('GET', '/hub/status');
    this.setState(r.ok ? {hub: r.body, error: null} : {error: r.body.message});
  }
  render(_, {hub, error}) {
    const queues = [];
    for (const e of (hub && hub.endpoints) || []) {
      const qs = e.queues && e.queues.length ? e.queues : [{}];
      for (const q of qs) queues.push({endpoint: e.endpoint, inUse: e.inUse, ...q});
    }
    const refusals = hub && hub.refusals && Object.entries(hub.refusals).map(([cause, v]) =>
      ({cause, ...(v && typeof v === 'object' ? v : {count: v})}));
    const counters = hub && hub.counters && Object.entries(hub.counters).map(([name, value]) => ({name, value}));
    return html`<section><h2>Hub</h2><${Err} error=${error}/>
      ${hub && html`<div>
        <p class="small">ledge-hub ${hub.version}, up ${hub.uptimeSeconds} s${hub.pid ? `, pid ${hub.pid}` : ''}</p>
        <div class="cols">
          <div><h3>Upstream</h3><${KV} id="hub-upstream" o=${hub.upstream}/></div>
          <div><h3>Connections</h3><${KV} id="hub-connections" o=${hub.connections}/>
            <h3>Store</h3><${KV} id="hub-store" o=${hub.store}/></div></div>
        <h3>Sessions</h3><${Rows} id="hub-sessions" rows=${hub.sessions} empty="No client is connected."/>
        <h3>Queues per endpoint and priority</h3><${Rows} id="hub-queues" rows=${queues} empty="No endpoint."/>
        <h3>Counters</h3>
        <table id="hub-counters" class="counters"><tbody>${(counters || []).map((c) => html`
          <tr data-counter=${c.name}><th>${c.name}</th><td>${cell(c.value)}</td></tr>`)}</tbody></table>
        ${refusals && refusals.length > 0 && html`<h3>Refusals</h3><${Rows} id="hub-refusals" rows=${refusals}/>`}
        <details><summary class="small">everything the hub reports (JSON)</summary>
          <pre id="hub-status" class="small">${JSON.stringify(hub, null, 2)}</pre></details></div>`}
    </section>`;
  }
}

/* ------------------------------------------------------------------ charts */

const COLORS = ['#1f6fb2', '#c2410c', '#15803d', '#7e22ce', '#b91c1c', '#0e7490', '#a16207', '#4b5563'];

// One chart of some series of GET /metrics/history over its times (uPlot on a canvas). It is
// made again when its series change, otherwise given the new data.
class Chart extends Component {
  componentDidMount() { this.draw(); }
  componentDidUpdate() { this.draw(); }
  componentWillUnmount() { if (this.plot) this.plot.destroy(); }
  draw() {
    const {times, series, scale, unit} = this.props;
    const names = Object.keys(series);
    const data = [times.map((t) => t / 1000), ...names.map((n) => series[n].map((v) => v == null ? null : v * (scale || 1)))];
    const key = names.join('\n');
    if (this.plot && this.key === key) { this.plot.setData(data); return; }
    if (this.plot) this.plot.destroy();
    this.key = key;
    const width = Math.max(300, Math.min(560, this.el.clientWidth || 560));
    this.plot = new uPlot({
      width, height: 180,
      series: [{}, ...names.map((n, i) => ({label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
                                             value: (u, v) => v == null ? '—' : `${+v.toFixed(2)} ${unit}`}))],
      axes: [{}, {size: 60, values: (u, vals) => vals.map((v) => +v.toFixed(2))}],
      scales: {x: {time: true}},
      legend: {live: true},
    }, data, this.el);
  }
  render({title, series, id}) {
    const points = Object.values(series).reduce((n, vs) => n + vs.filter((v) => v != null).length, 0);
    return html`<div class="chart" id=${id} data-points=${points}><h3>${title}</h3>
      ${Object.keys(series).length === 0 && html`<p class="small">No data yet.</p>`}
      <div ref=${(el) => { this.el = el; }}></div></div>`;
  }
}

// "the last 12 min" (or seconds) that the samples' times cover.
const span = (times) => {
  const s = times.length > 1 ? Math.round((times[times.length - 1] - times[0]) / 1000) : 0;
  return s < 120 ? `the last ${s} s` : `the last ${Math.round(s / 60)} min`;
};

// The last hour as charts: messages per second through the hub, queue depths, memory per
// module, from the samples ledged keeps (GET /metrics/history; dashboard.chart_interval).
class Charts extends Component {
  componentDidMount() { this.load(); }
  componentWillUnmount() { clearTimeout(this.timer); }
  async load() {
    const r = await api.json('GET', '/metrics/history');
    this.setState(r.ok ? {h: r.body, error: null} : {error: r.body.message});
    const every = r.ok && r.body.intervalSeconds ? Math.max(1, r.body.intervalSeconds) : 10;
    this.timer = setTimeout(() => this.load(), every * 1000);
  }
  render(_, {h, error}) {
    const pick = (test, rename) => {
      const out = {};
      for (const [n, s] of Object.entries((h && h.series) || {})) if (test(n)) out[rename(n)] = s.values;
      return out;
    };
    return html`<section><h2>Charts</h2><${Err} error=${error}/>
      ${h && html`<div>
        <p class="small">${span(h.times)}, ${`a sample every ${h.intervalSeconds} s`}${h.dropped ? ` (${h.dropped} values of series beyond the limit not kept)` : ''}</p>
        <div class="charts">
          <${Chart} id="chart-messages" title="Messages per second (hub)" unit="msg/s" times=${h.times}
            series=${pick((n) => n === 'hub.received' || n === 'hub.delivered', (n) => n.slice(4))}/>
          <${Chart} id="chart-queues" title="Queue depth" unit="msgs" times=${h.times}
            series=${pick((n) => n === 'hub.queued' || n.startsWith('queue.'), (n) => n === 'hub.queued' ? 'all queues' : n.slice(6))}/>
          <${Chart} id="chart-memory" title="Memory per module" unit="MiB" scale=${1 / 1048576} times=${h.times}
            series=${pick((n) => n.startsWith('memory.'), (n) => n.slice(7))}/>
          <${Chart} id="chart-connections" title="Hub connections" unit="" times=${h.times}
            series=${pick((n) => n === 'hub.connections', () => 'open')}/>
        </div></div>`}
    </section>`;
  }
}

/* ------------------------------------------------------------------ VMs */

// A VM's restart (stop, start, until running), reboot (the guest from inside) and delete (a
// running one stopped first), each asked for again first; base: the device's (api.baseOf).
const VM_ACTIONS = {
  restart: {ask: (n) => `Restart VM ${n}? It is stopped (its guest shut down) and started again.`,
            method: 'POST', path: (n) => `/vms/${encodeURIComponent(n)}/restart?timeout=60`},
  reboot: {ask: (n) => `Reboot VM ${n}'s guest?`, method: 'POST', path: (n) => `/vms/${encodeURIComponent(n)}/reboot`},
  delete: {ask: (n) => `Delete VM ${n} and its disk? A running VM is stopped first. This cannot be undone.`,
           method: 'DELETE', path: (n) => `/vms/${encodeURIComponent(n)}?force=1`},
};
async function vmAction(verb, name, base) {
  const a = VM_ACTIONS[verb];
  if (!window.confirm(a.ask(name))) return null;
  const r = await api.json(a.method, a.path(name), undefined, base);
  return r.ok ? null : `${verb} ${name}: ${r.body.message}`;
}


// `ledge vm` on this host (GET/POST /vms..., vms.c through the VM library): the VMs with their
// state and resources, start and stop, and a VM's page: resources (changed while stopped), port
// forwards (live while it runs), shared folders, its console log; a new VM from a cached image.
class Vms extends Component {
  constructor(props) {
    super(props);
    this.state = {name: '', image: '', cpus: '1', memory: '1G', disk: '10G'};
  }
  componentDidMount() { this.load(); this.timer = setInterval(() => this.load(), 3000); }
  componentWillUnmount() { clearInterval(this.timer); }
  async load() {
    const r = await api.json('GET', '/vms');
    this.setState(r.ok ? {vms: r.body.vms, listError: null} : {listError: r.body.message});
  }
  async command(name, verb) {
    this.setState({busy: `${name}:${verb}`, error: null});
    const r = await api.json('POST', `/vms/${encodeURIComponent(name)}/${verb}${verb === 'start' ? '?wait=1&timeout=120' : ''}`);
    this.setState({busy: null, error: r.ok ? null : `${verb} ${name}: ${r.body.message}`});
    this.load();
  }
  async action(name, verb) {
    this.setState({busy: `${name}:${verb}`, error: null});
    const error = await vmAction(verb, name);
    this.setState({busy: null, error});
    this.load();
  }
  async create(e) {
    e.preventDefault();
    const {name, image, cpus, memory, disk} = this.state;
    this.setState({creating: true, error: null});
    const r = await api.json('POST', '/vms', {name, image, cpus: Number(cpus), memory, disk});
    this.setState({creating: false, error: r.ok ? null : `create ${name}: ${r.body.message}`, name: r.ok ? '' : name});
    this.load();
  }
  render(_, {vms, error, listError, busy, creating}) {
    const field = (k, attrs) => html`<input id=${'vm-new-' + k} value=${this.state[k]} onInput=${(e) => this.setState({[k]: e.target.value})} ...${attrs}/>`;
    return html`<section>
      <h2>Virtual machines</h2>
      <${Err} error=${listError}/><${Err} error=${error}/>
      <table id="vms"><thead><tr><th>name</th><th>state</th><th>arch</th><th>CPUs</th><th>memory</th><th>disk</th>
        <th>hub port</th><th>autostart</th><th></th></tr></thead><tbody>
      ${(vms || []).map((v) => html`<tr data-vm=${v.name}>
        <td><a href=${'#/vms/' + encodeURIComponent(v.name)}>${v.name}</a></td>
        <td class=${'vm-state s-' + v.state}>${v.state}</td><td>${v.arch}</td><td>${v.cpus}</td>
        <td>${bytes(v.memory)}</td><td>${bytes(v.disk)}</td><td>${v.hubPort || '—'}</td><td>${v.autostart ? 'yes' : 'no'}</td>
        <td class="actions">${['start', 'stop'].map((verb) => html`
          <button class=${'vm-' + verb} disabled=${busy === `${v.name}:${verb}`} onClick=${() => this.command(v.name, verb)}>${verb}</button>`)}
          ${['restart', 'reboot', 'delete'].map((verb) => html`
          <button class=${'vm-' + verb} disabled=${busy === `${v.name}:${verb}`} onClick=${() => this.action(v.name, verb)}>${verb}</button>`)}</td></tr>`)}
      </tbody></table>
      ${vms && !vms.length && html`<p>No VMs on this host (<code>ledge vm create</code>).</p>`}
      <h3>Create a VM</h3>
      <p class="small">From an image in this host's cache (<code>ledge vm image list</code>; empty: the newest);
        building one from a ledge package takes minutes: <code>ledge vm create NAME --deb FILE</code>.</p>
      <form id="vm-create" class="toolbar" onSubmit=${(e) => this.create(e)}>
        ${field('name', {placeholder: 'name', required: true})} ${field('image', {placeholder: 'image key (optional)'})}
        <label>CPUs ${field('cpus', {size: 3})}</label> <label>memory ${field('memory', {size: 6})}</label>
        <label>disk ${field('disk', {size: 6})}</label>
        <button id="vm-create-button" type="submit" disabled=${creating}>create</button></form>
    </section>`;
  }
}

// A size as `ledge vm` reads it back: "2G", "512M", else bytes.
const sizeText = (n) => n % 2 ** 30 === 0 ? `${n / 2 ** 30}G` : n % 2 ** 20 === 0 ? `${n / 2 ** 20}M` : String(n);

class VmPage extends Component {
  constructor(props) {
    super(props);
    this.state = {port: '', hostDir: '', guestDir: '', readOnly: false};
  }
  componentDidMount() { this.load(); this.timer = setInterval(() => this.load(), 3000); }
  componentWillUnmount() { clearInterval(this.timer); }
  path(suffix) { return `/vms/${encodeURIComponent(this.props.name)}${suffix || ''}`; }
  async load() {
    const [v, c] = await Promise.all([api.json('GET', this.path()), api.json('GET', this.path('/console?lines=200'))]);
    if (!v.ok) { this.setState({error: v.body.message}); return; }
    const st = {vm: v.body, console: c.ok ? c.body.text : `(${c.body.message})`};
    if (this.state.res === undefined)
      st.res = {cpus: String(v.body.cpus), memory: sizeText(v.body.memory), disk: sizeText(v.body.disk)};
    if (v.body.state !== 'stopped' && v.body.state !== 'failed') {
      const p = await api.json('GET', this.path('/ports'));
      st.livePorts = p.ok ? (p.body.ports || p.body) : null;
    } else st.livePorts = null;
    this.setState(st);
  }
  async post(suffix, body, what) {
    this.setState({error: null, done: null});
    const r = await api.json('POST', this.path(suffix), body);
    this.setState(r.ok ? {done: `${what}${r.body.restartNeeded ? ' (from the next start)' : ''}`} : {error: `${what}: ${r.body.message}`});
    this.load();
    return r.ok;
  }
  async action(verb, what) {
    this.setState({error: null, done: null});
    const error = await vmAction(verb, this.props.name);
    if (!error && verb === 'delete') { location.hash = '#/vms'; return; }
    this.setState(error ? {error} : {done: what});
    this.load();
  }
  render({name}, {vm, error, done, console, livePorts, port, hostDir, guestDir, readOnly, res}) {
    if (!vm) return html`<section><p><a href="#/vms">← all VMs</a></p><${Err} error=${error}/><p>Loading…</p></section>`;
    const running = vm.state !== 'stopped' && vm.state !== 'failed';
    const ports = livePorts || (vm.ports || []).map((p) => ({...p, state: 'from the next start'}));
    return html`<section>
      <p><a href="#/vms">← all VMs</a></p>
      <h2>VM ${name} <span id="vm-state" class=${'s-' + vm.state}>${vm.state}</span></h2>
      <${Err} error=${error}/>${done && html`<p id="vm-done" class="outcome">${done}</p>`}
      <div class="toolbar">
        <button id="vm-start" disabled=${running} onClick=${() => this.post('/start?wait=1&timeout=120', undefined, 'started')}>start</button>
        <button id="vm-stop" disabled=${!running} onClick=${() => this.post('/stop?timeout=60', undefined, 'stopped')}>stop</button>
        <button id="vm-restart" onClick=${() => this.action('restart', 'restarted')}>restart</button>
        <button id="vm-reboot" disabled=${!running} onClick=${() => this.action('reboot', 'rebooting')}>reboot</button>
        <button id="vm-delete" onClick=${() => this.action('delete')}>delete</button></div>
      <div class="cols"><div>
        <h3>Resources</h3>
        <${KV} id="vm-def" o=${{arch: vm.arch, accel: vm.accel, cpus: vm.cpus, memory: bytes(vm.memory), disk: bytes(vm.disk),
                               hubPort: vm.hubPort, autostart: vm.autostart, image: vm.image,
                               ...(vm.status ? {address: vm.status.address, accelerator: vm.status.accelDetail} : {})}}/>
        ${res && html`<form id="vm-resources" class="toolbar" onSubmit=${(e) => { e.preventDefault(); this.post('/resources', {cpus: Number(res.cpus), memory: res.memory, disk: res.disk}, 'resources saved'); }}>
          <label>CPUs <input id="vm-cpus" size="3" value=${res.cpus} onInput=${(e) => this.setState({res: {...res, cpus: e.target.value}})}/></label>
          <label>memory <input id="vm-memory" size="6" value=${res.memory} onInput=${(e) => this.setState({res: {...res, memory: e.target.value}})}/></label>
          <label>disk <input id="vm-disk" size="6" value=${res.disk} onInput=${(e) => this.setState({res: {...res, disk: e.target.value}})}/></label>
          <button id="vm-resources-save" type="submit" disabled=${running} title=${running ? 'stop the VM first' : ''}>save</button></form>`}
      </div><div>
        <h3>Port forwards</h3>
        <${Rows} id="vm-ports" rows=${Array.isArray(ports) ? ports : []} empty="No port forwards."/>
        <form class="toolbar" onSubmit=${async (e) => { e.preventDefault(); if (await this.post('/ports', {spec: port}, `forward ${port} added`)) this.setState({port: ''}); }}>
          <input id="vm-port" placeholder="[ADDR:]HOST:GUEST[/udp]" value=${port} onInput=${(e) => this.setState({port: e.target.value})}/>
          <button id="vm-port-add" type="submit">add</button>
          <button id="vm-port-remove" type="button" onClick=${() => this.post('/ports/remove', {spec: port}, `forward ${port} removed`)}>remove</button></form>
        <h3>Shared folders</h3>
        <${Rows} id="vm-shares" rows=${vm.shares || []} empty="No shared folders."/>
        <form class="toolbar" onSubmit=${(e) => { e.preventDefault(); this.post('/shares', {hostDir, guestDir, readOnly}, `${hostDir} shared`); }}>
          <input id="vm-share-host" placeholder="host folder" value=${hostDir} onInput=${(e) => this.setState({hostDir: e.target.value})}/>
          <input id="vm-share-guest" placeholder="guest folder" value=${guestDir} onInput=${(e) => this.setState({guestDir: e.target.value})}/>
          <label><input type="checkbox" checked=${readOnly} onChange=${(e) => this.setState({readOnly: e.target.checked})}/> read-only</label>
          <button id="vm-share-add" type="submit">share</button>
          <button id="vm-share-remove" type="button" onClick=${() => this.post('/shares/remove', {guestDir}, `${guestDir} no longer shared`)}>stop sharing</button></form>
      </div></div>
      <h3>Console log</h3>
      <pre id="vm-console" class="logs">${console}</pre>
    </section>`;
  }
}

/* ------------------------------------------------------------------ other devices */

// Other ledge devices this dashboard manages: added by address and one of their tokens; their
// TLS key is pinned when they are added (GET/POST/DELETE /api/remotes, this ledged's own).
class Devices extends Component {
  constructor(props) {
    super(props);
    this.state = {name: '', address: '', token: ''};
  }
  componentDidMount() { this.load(); }
  async load() {
    const r = await api.json('GET', '/remotes', undefined, true);
    this.setState(r.ok ? {remotes: r.body.remotes} : {error: r.body.message});
    if (r.ok && this.props.onChange) this.props.onChange(r.body.remotes);
  }
  async add(e) {
    e.preventDefault();
    const {name, address, token} = this.state;
    this.setState({busy: true, error: null, added: null});
    const r = await api.json('POST', '/remotes', {name, address, token: token.trim()}, true);
    this.setState({busy: false, error: r.ok ? null : r.body.message, added: r.ok ? r.body : null,
                   token: r.ok ? '' : token});
    this.load();
  }
  async remove(name) {
    const r = await api.json('DELETE', `/remotes/${encodeURIComponent(name)}`, undefined, true);
    this.setState({error: r.ok ? null : r.body.message});
    this.load();
  }
  render({current, onSelect}, {remotes, error, busy, added, name, address, token}) {
    return html`<section>
      <h2>Other devices</h2>
      <p class="small">Other ledge devices managed from here: each is reached over TLS at the address of
        its <code>dashboard.listen</code>, with the public key it presented when it was added pinned, and
        authenticated with a token <code>ledge dashboard token</code> printed on it.</p>
      <${Err} error=${error}/>
      ${added && html`<p id="remote-added">added ${added.name} (${added.deviceId}), key pinned: <code>${added.pin}</code></p>`}
      <table id="remotes"><thead><tr><th>name</th><th>device</th><th>address</th><th>pinned key</th><th>added</th><th></th></tr></thead><tbody>
        <tr class=${!current ? 'current' : ''}><td>this device</td><td></td><td></td><td></td><td></td>
          <td><button onClick=${() => onSelect(null)} disabled=${!current}>manage</button></td></tr>
        ${(remotes || []).map((m) => html`<tr data-remote=${m.name} class=${current === m.name ? 'current' : ''}>
          <td>${m.name}</td><td class="device">${m.deviceId}</td><td>${m.address}</td>
          <td class="small pin">${m.pin}</td><td class="small">${m.addedAt}</td>
          <td><button class="manage" onClick=${() => onSelect(m.name)} disabled=${current === m.name}>manage</button>
            <button class="remove" onClick=${() => this.remove(m.name)}>remove</button></td></tr>`)}
      </tbody></table>
      <h3>Add a device</h3>
      <form id="remote-form" class="toolbar" onSubmit=${(e) => this.add(e)}>
        <input id="remote-name" placeholder="name" required value=${name} onInput=${(e) => this.setState({name: e.target.value})}/>
        <input id="remote-address" placeholder="address:port" required value=${address} onInput=${(e) => this.setState({address: e.target.value})}/>
        <input id="remote-token" type="password" autocomplete="off" placeholder="ldt_… (its token)" required value=${token}
          onInput=${(e) => this.setState({token: e.target.value})}/>
        <button id="remote-add" type="submit" disabled=${busy}>add</button>
      </form>
    </section>`;
  }
}

/* ------------------------------------------------------------------ the fleet */

// This device and every other one side by side (GET /api/fleet?device=NAME, dashboard_fleet.c:
// each device's calls bounded by the timeout there): one request per device, each shown when it
// comes, so a dead device holds up only its own card. Links go to that device's pages.
const FLEET_TIMEOUT_S = 4;

class Fleet extends Component {
  constructor(props) {
    super(props);
    this.state = {order: null, devices: {}, busy: null, error: null};
  }
  componentDidMount() { this.alive = true; this.start(); }
  componentWillUnmount() { this.alive = false; clearTimeout(this.timer); }
  async start() {
    const r = await api.json('GET', '/remotes', undefined, true);
    if (!this.alive) return;
    if (!r.ok) { this.setState({error: r.body.message}); return; }
    const order = ['', ...r.body.remotes.map((m) => m.name)];
    this.setState({order});
    for (const name of order) this.poll(name);
  }
  async poll(name) {
    const r = await api.json('GET', `/fleet?device=${encodeURIComponent(name)}&timeout=${FLEET_TIMEOUT_S}`, undefined, true);
    if (!this.alive) return;
    const dev = r.ok ? r.body.devices[0] : {name, reachable: false, reason: `answered ${r.status}`, error: r.body.message};
    this.setState({devices: {...this.state.devices, [name]: {...dev, at: new Date()}}});
    setTimeout(() => { if (this.alive) this.poll(name); }, 5000);
  }
  async vm(name, verb, vm) {
    this.setState({busy: `${name}/${vm}:${verb}`, error: null});
    const error = await vmAction(verb, vm, api.baseOf(name));
    this.setState({busy: null, error});
  }
  card(name, d) {
    const go = (hash) => (e) => { e.preventDefault(); this.props.onSelect(name || null, hash); };
    const title = name ? name : 'this device';
    if (!d) return html`<div class="fleet-card" data-device=${name || '.'}><h3>${title}</h3><p class="small">asking…</p></div>`;
    const m = d.modules, dep = d.deployment, hub = d.hub;
    return html`<div class=${'fleet-card' + (d.reachable ? '' : ' down')} data-device=${name || '.'}>
      <h3><a href="#" class="fleet-manage" onClick=${go('#/overview')}>${title}</a>
        <span class=${'fleet-state ' + (d.reachable ? 's-running' : 's-failed')}>${d.reachable ? 'reachable' : `unreachable: ${d.reason}`}</span></h3>
      ${!d.reachable && d.error && html`<p class="small error fleet-error">${d.error}</p>`}
      <dl class="facts">
        <dt>device</dt><dd class="fleet-device-id">${d.deviceId || '—'}</dd>
        ${d.address && html`<dt>address</dt><dd>${d.address}</dd>`}
        ${d.reachable && html`
        <dt>ledge</dt><dd class="fleet-version">${d.version}</dd>
        <dt>deployment</dt><dd class="fleet-deployment">${dep && dep.id != null ? `#${dep.id} ${dep.outcome || ''}${dep.kind && dep.kind !== 'deploy' ? ` (${dep.kind})` : ''}` : 'none'}${dep && dep.inProgress != null ? `, #${dep.inProgress} in progress` : ''}</dd>
        <dt>modules</dt><dd class="fleet-modules"><a href="#" onClick=${go('#/modules')}>${m ? `${m.running}/${m.total} running` : '?'}</a>
          ${m && m.failed.length > 0 && html` — <span class="error fleet-failed">${m.failed.map((f) => `${f.name} ${f.status}`).join(', ')}</span>`}</dd>
        <dt>upstream</dt><dd class=${'fleet-hub u-' + (hub ? hub.state : '')}>${hub ? hub.state : '?'}${hub && hub.host ? ` (${hub.host})` : ''}${hub && hub.error ? html` <span class="small">${hub.error}</span>` : ''}</dd>`}
      </dl>
      ${d.reachable && html`<div>
        <table class="fleet-vms"><thead><tr><th><a href="#" onClick=${go('#/vms')}>VMs</a></th><th>state</th><th>arch</th><th></th></tr></thead><tbody>
        ${(d.vms || []).map((v) => html`<tr data-vm=${v.name}>
          <td><a href="#" onClick=${go('#/vms/' + encodeURIComponent(v.name))}>${v.name}</a></td>
          <td class=${'vm-state s-' + v.state}>${v.state}</td><td>${v.arch}</td>
          <td class="actions">${['restart', 'delete'].map((verb) => html`
            <button class=${'vm-' + verb} disabled=${this.state.busy === `${name}/${v.name}:${verb}`}
              onClick=${() => this.vm(name, verb, v.name)}>${verb}</button>`)}</td></tr>`)}
        </tbody></table>
        ${d.vms && !d.vms.length && html`<p class="small">No VMs.</p>`}
        ${d.vmsError && html`<p class="small error">VMs: ${d.vmsError}</p>`}</div>`}
      <p class="small">as of ${d.at.toLocaleTimeString()}</p>
    </div>`;
  }
  render(_, {order, devices, error, busy}) {
    return html`<section>
      <h2>Fleet</h2>
      <p class="small">This device and the others added on the <a href="#/devices">devices</a> page, each asked
        on its own (at most ${FLEET_TIMEOUT_S} s) every 5 s. ${busy && html`<span>working…</span>`}</p>
      <${Err} error=${error}/>
      <div class="fleet">${(order || []).map((n) => this.card(n, devices[n]))}</div>
    </section>`;
  }
}

/* ------------------------------------------------------------------ shell */

const pages = [['overview', 'Overview'], ['modules', 'Modules'], ['deployment', 'Deployment'],
               ['twins', 'Twins'], ['hub', 'Hub'], ['charts', 'Charts'], ['vms', 'VMs'], ['devices', 'Devices'], ['fleet', 'Fleet']];

class App extends Component {
  constructor() {
    super();
    this.state = {route: location.hash.slice(2) || 'overview', remote: null, remotes: []};
    window.addEventListener('hashchange', () => this.setState({route: location.hash.slice(2) || 'overview'}));
  }
  async componentDidMount() {
    this.setState({session: await api.session()});
    const r = await api.json('GET', '/remotes', undefined, true);
    if (r.ok) this.setState({remotes: r.body.remotes});
  }
  async logout() {
    await api.call('POST', '/logout');
    location.href = '/login';
  }
  select(name, hash) {
    api.setRemote(name);
    this.setState({remote: name});
    location.hash = hash || '#/overview';
  }
  render(_, {route, session, remote, remotes}) {
    if (!session) return html`<p>Loading…</p>`;
    const [page, arg] = route.split('/');
    const k = remote || '';
    let body;
    if (page === 'modules' && arg) body = html`<${ModulePage} key=${k + '/' + arg} name=${decodeURIComponent(arg)}/>`;
    else if (page === 'modules') body = html`<${Modules} key=${k}/>`;
    else if (page === 'deployment') body = html`<${Deployment} key=${k}/>`;
    else if (page === 'hub') body = html`<${Hub} key=${k}/>`;
    else if (page === 'charts') body = html`<${Charts} key=${k}/>`;
    else if (page === 'vms' && arg) body = html`<${VmPage} key=${k + '/' + arg} name=${decodeURIComponent(arg)}/>`;
    else if (page === 'vms') body = html`<${Vms} key=${k}/>`;
    else if (page === 'twins') body = html`<${Twins} key=${k} target=${route.split('/').slice(1).map(decodeURIComponent).join('/')}/>`;
    else if (page === 'devices') {
      body = html`<${Devices} current=${remote} onSelect=${(n) => this.select(n)}
        onChange=${(list) => this.setState({remotes: list})}/>`;
    } else if (page === 'fleet') body = html`<${Fleet} onSelect=${(n, hash) => this.select(n, hash)}/>`;
    else body = html`<${Overview} key=${k}/>`;
    const m = remote && remotes.find((x) => x.name === remote);
    return html`<div>
      <header><b>ledge</b> <span class="small">${session.deviceId}</span>
        <nav>${pages.map(([p, t]) => html`<a href=${'#/' + p} class=${p === page ? 'on' : ''}>${t}</a>`)}</nav>
        <button id="logout" onClick=${() => this.logout()}>log out</button></header>
      ${remote && html`<div id="managing" class="managing">managing <b>${remote}</b>
        ${m ? ` (${m.deviceId} at ${m.address}, key ${m.pin})` : ''} through this dashboard —
        <a href="#/devices" onClick=${() => this.select(null)}>back to this device</a></div>`}
      <main>${body}</main></div>`;
  }
}

render(html`<${App}/>`, document.getElementById('app'));
