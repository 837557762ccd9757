// dashboard.js — tests/system/dashboard.sh's browser half: Debian's Chromium, headless, driven by
// playwright-core (src/dashboard/web's devDependency) through the dashboard as a person would use
// it. Environment: DASH_URL (http://127.0.0.1:PORT), DASH_TOKEN (from `ledge dashboard token`),
// BAD_MANIFEST and GOOD_MANIFEST (files), SHOTS (a folder for the screenshots), DEVICE_ID,
// ROLLBACK_TO (the id of an earlier deployment, not the previous one); and
// for the remote device REMOTE_ADDRESS, REMOTE_TOKEN, REMOTE_PIN, REMOTE_DEVICE.
// Prints one line per step; exits 1 naming the step that failed.
'use strict';
const {chromium} = require('playwright-core');
const fs = require('fs');
const path = require('path');

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const URL = env('DASH_URL');
const SHOTS = env('SHOTS');
let step = 'start';
const log = (s) => {
  step = s;
  console.log(`[dashboard.js] ${s}`);
};
const check = (cond, what) => {
  if (!cond) throw new Error(what);
};

async function shot(page, name) {
  await page.screenshot({path: path.join(SHOTS, `dashboard-${name}.png`), fullPage: false});
}

// A fetch from inside the page (same origin, the session's cookie): {status, body}.
async function pageFetch(page, method, url, headers) {
  return page.evaluate(async ([m, u, h]) => {
    const r = await fetch(u, {method: m, headers: h});
    return {status: r.status, body: await r.text()};
  }, [method, url, headers || {}]);
}

// Another ledged managed from this one: added by address and its token (a wrong one refused),
// its key pinned and shown, then the pages for it through this dashboard.
async function remote(page) {
  log('other devices: a wrong token for the second ledged is refused');
  await page.click('nav a[href="#/devices"]');
  await page.waitForSelector('#remote-form');
  await page.fill('#remote-name', 'edge2');
  await page.fill('#remote-address', env('REMOTE_ADDRESS'));
  await page.fill('#remote-token', 'ldt_00000000_' + '0'.repeat(64));
  await page.click('#remote-add');
  await page.waitForSelector('p.error');
  check(/refused the token/.test(await page.textContent('p.error')), 'no refusal of the wrong token');

  log('add it with its token: its key is pinned');
  await page.fill('#remote-token', env('REMOTE_TOKEN'));
  await page.click('#remote-add');
  await page.waitForSelector('#remote-added');
  const pin = await page.textContent('tr[data-remote="edge2"] td.pin');
  check(pin === env('REMOTE_PIN'), `pinned ${pin}, its key is ${env('REMOTE_PIN')}`);
  check((await page.textContent('tr[data-remote="edge2"] td.device')) === env('REMOTE_DEVICE'),
        'the device id of the second ledged');
  await shot(page, 'devices');

  log('manage it: its overview, through this dashboard');
  await page.click('tr[data-remote="edge2"] button.manage');
  await page.waitForSelector('#managing');
  await page.waitForFunction((id) => (document.getElementById('device-id') || {}).textContent === id,
                             env('REMOTE_DEVICE'));
  await page.waitForSelector('table.checks tbody tr', {timeout: 60000});
  await shot(page, 'remote-overview');

  log("its modules, far's logs, stop and start far");
  await page.click('nav a[href="#/modules"]');
  await page.waitForFunction(() => {
    const td = document.querySelector('tr[data-module="far"] td.status');
    return td && td.textContent === 'running';
  }, null, {timeout: 30000});
  check(!(await page.$('tr[data-module="web"]')), 'this device\'s module web among the remote\'s');
  await page.click('tr[data-module="far"] a');
  await page.waitForFunction(() => /testmod starting far/.test((document.getElementById('logs') || {textContent: ''}).textContent));
  const before = (await page.textContent('#logs')).split('\n').length;
  await page.waitForFunction((n) => (document.getElementById('logs') || {textContent: ''}).textContent.split('\n').length > n + 1,
                             before, {timeout: 15000});
  await page.click('#module-stop');
  await page.waitForFunction(() => (document.getElementById('module-status') || {textContent: ''}).textContent === 'stopped',
                             null, {timeout: 30000});
  await page.click('#module-start');
  await page.waitForFunction(() => (document.getElementById('module-status') || {textContent: ''}).textContent === 'running',
                             null, {timeout: 30000});

  log('back to this device');
  await page.click('nav a[href="#/devices"]');
  await page.waitForSelector('#remotes');
  await page.click('#remotes tbody tr:first-child button');
  await page.waitForFunction((id) => (document.getElementById('device-id') || {}).textContent === id,
                             env('DEVICE_ID'));
  check(!(await page.$('#managing')), 'still managing the remote');
}

// The fleet page: this device, edge2 and edge3 (a fake that stopped answering) side by side with
// their VMs; a VM of edge2 restarted and one of this device deleted from there, each asked first.
async function fleet(page) {
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(); });
  const card = (n) => `.fleet-card[data-device="${n}"]`;
  const text = (sel) => page.evaluate((s) => (document.querySelector(s) || {textContent: ''}).textContent, sel);
  log('the fleet: this device and edge2 with their VMs, edge3 unreachable (timeout)');
  await page.click('nav a[href="#/fleet"]');
  await page.waitForFunction(([sel, id]) => (document.querySelector(sel) || {}).textContent === id,
                             [`${card('.')} .fleet-device-id`, env('DEVICE_ID')]);
  await page.waitForFunction(([sel, id]) => (document.querySelector(sel) || {}).textContent === id,
                             [`${card('edge2')} .fleet-device-id`, env('REMOTE_DEVICE')]);
  // edge2 answered while edge3's calls still wait for their timeout (4 s)
  const early = await text(card('edge3'));
  console.log(`[dashboard.js] edge3 when edge2 was shown: ${early.replace(/\s+/g, ' ').slice(0, 80)}`);
  for (const vm of ['f1', 'f2']) await page.waitForSelector(`${card('.')} tr[data-vm="${vm}"]`);
  await page.waitForSelector(`${card('edge2')} tr[data-vm="r2vm"]`);
  check((await text(`${card('edge2')} tr[data-vm="r2vm"]`)).includes('amd64'), 'r2vm\'s arch');
  check(/^1\/1 running/.test(await text(`${card('edge2')} .fleet-modules`)), `edge2's modules: ${await text(`${card('edge2')} .fleet-modules`)}`);
  check(/\d+\/\d+ running/.test(await text(`${card('.')} .fleet-modules`)), 'this device\'s modules');
  check(/^#\d+ applied/.test(await text(`${card('edge2')} .fleet-deployment`)), `edge2's deployment: ${await text(`${card('edge2')} .fleet-deployment`)}`);
  check((await text(`${card('.')} .fleet-hub`)).length > 0, 'the hub\'s upstream state');
  check((await text(`${card('.')} .fleet-version`)).length > 0, 'the ledge version');
  await page.waitForFunction((sel) => /unreachable: timeout/.test((document.querySelector(sel) || {textContent: ''}).textContent),
                             `${card('edge3')} .fleet-state`, {timeout: 20000});

  log("restart edge2's r2vm from the fleet page (asked first): running");
  await page.click(`${card('edge2')} tr[data-vm="r2vm"] button.vm-restart`);
  await page.waitForFunction((sel) => (document.querySelector(sel) || {}).textContent === 'running',
                             `${card('edge2')} tr[data-vm="r2vm"] td.vm-state`, {timeout: 90000});
  check(dialogs.some((m) => /Restart VM r2vm/.test(m)), `the confirmation: ${dialogs.join(' | ')}`);
  await page.waitForFunction((sel) => /unreachable: timeout/.test((document.querySelector(sel) || {textContent: ''}).textContent),
                             `${card('edge3')} .fleet-state`, {timeout: 20000});
  await shot(page, 'fleet');

  log("delete this device's f2 from the fleet page (asked first): gone");
  await page.click(`${card('.')} tr[data-vm="f2"] button.vm-delete`);
  await page.waitForFunction((sel) => !document.querySelector(sel), `${card('.')} tr[data-vm="f2"]`, {timeout: 30000});
  check(dialogs.some((m) => /Delete VM f2/.test(m)), `the confirmation: ${dialogs.join(' | ')}`);

  log("a link into edge2's VM page, then back to this device from its card");
  await page.click(`${card('edge2')} tr[data-vm="r2vm"] a`);
  await page.waitForSelector('#managing');
  await page.waitForFunction(() => (document.getElementById('vm-state') || {}).textContent === 'running', null, {timeout: 30000});
  await page.click('nav a[href="#/fleet"]');
  await page.waitForSelector(`${card('.')} a.fleet-manage`);
  await page.click(`${card('.')} a.fleet-manage`);
  await page.waitForFunction((id) => (document.getElementById('device-id') || {}).textContent === id, env('DEVICE_ID'));
  check(!(await page.$('#managing')), 'still managing the remote');
}

async function main() {
  const args = process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [];
  const browser = await chromium.launch({executablePath: '/usr/bin/chromium', headless: true, args});
  const context = await browser.newContext({viewport: {width: 1280, height: 860}});
  context.setDefaultTimeout(20000);
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  try {
    log('without a session the dashboard sends the browser to the login page');
    await page.goto(URL + '/');
    check(new globalThis.URL(page.url()).pathname === '/login', `landed on ${page.url()}`);
    await shot(page, 'login');

    log('a wrong token is refused on the page');
    await page.fill('#token', 'ldt_wrong');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => (document.getElementById('error') || {textContent: ''}).textContent.length > 0);
    check(/wrong or expired/.test(await page.textContent('#error')), 'no refusal shown');

    log('log in with the token ledge dashboard token printed');
    await page.fill('#token', env('DASH_TOKEN'));
    await page.click('button[type=submit]');
    await page.waitForSelector('#device-id');
    check((await page.textContent('#device-id')) === env('DEVICE_ID'), 'device id on the overview');
    check(/^\d/.test(await page.textContent('#version')), 'version on the overview');
    await page.waitForSelector('table.checks tbody tr', {timeout: 60000});
    await shot(page, 'overview');

    log('cookies: the session is HttpOnly and SameSite=Strict');
    const cookies = await context.cookies();
    check(cookies.length === 1 && cookies[0].httpOnly && cookies[0].sameSite === 'Strict',
          `cookies ${JSON.stringify(cookies)}`);
    check(!(await page.evaluate(() => document.cookie)), 'the session cookie is readable by scripts');

    log('a POST without the CSRF header is refused, with a wrong one too');
    let r = await pageFetch(page, 'POST', '/api/modules/web/stop');
    check(r.status === 403 && /X-CSRF-Token/.test(r.body), `no header: ${r.status} ${r.body}`);
    r = await pageFetch(page, 'POST', '/api/modules/web/stop', {'X-CSRF-Token': 'nope'});
    check(r.status === 403, `wrong header: ${r.status} ${r.body}`);
    log('routes outside the allowlist do not exist under /api');
    r = await pageFetch(page, 'GET', '/api/dashboard/tokens');
    check(r.status === 404, `GET /api/dashboard/tokens: ${r.status}`);
    r = await pageFetch(page, 'GET', '/api/devices/leaf1/keys');
    check(r.status === 404, `GET /api/devices/leaf1/keys: ${r.status}`);
    r = await pageFetch(page, 'GET', '/api/devices');
    check(r.status === 200 && !/primaryKey|"keys"/.test(r.body), `GET /api/devices: ${r.status} ${r.body}`);

    log('deploy a manifest with an error: the error is shown at its JSON path');
    await page.click('nav a[href="#/deployment"]');
    await page.waitForSelector('#manifest');
    await page.waitForSelector('#history');
    await page.fill('#manifest', fs.readFileSync(env('BAD_MANIFEST'), 'utf8'));
    await page.click('#validate');
    await page.waitForSelector('#errors li');
    const errs = await page.$$eval('#errors li', (lis) => lis.map((li) => ({
      path: li.querySelector('code.path').textContent, text: li.textContent})));
    console.log(`[dashboard.js]   errors: ${JSON.stringify(errs)}`);
    check(errs.some((e) => /modules\.two\.restartPolicy$/.test(e.path) && /always/.test(e.text)),
          'the restartPolicy error at its path');
    check(await page.isDisabled('#apply'), 'apply is possible with an invalid manifest');
    await shot(page, 'deployment-error');

    log('fix it: the plan and the diff');
    await page.fill('#manifest', fs.readFileSync(env('GOOD_MANIFEST'), 'utf8'));
    await page.click('#validate');
    await page.waitForSelector('#plan');
    const plan = await page.$$eval('#plan ul.plan li', (lis) => lis.map((li) => li.textContent.trim()));
    console.log(`[dashboard.js]   plan: ${JSON.stringify(plan)}`);
    check(plan.some((p) => /^create two\b/.test(p)), 'the plan creates two');
    check(!plan.some((p) => /\bweb\b/.test(p)), 'the plan touches web');
    check((await page.$$('#plan pre.diff .dadd')).length > 0, 'no added lines in the diff');
    await shot(page, 'deployment-plan');

    log('apply it and see it applied');
    await page.click('#apply');
    await page.waitForFunction(() => /applied|failed|refused/.test(
        (document.getElementById('outcome') || {}).textContent || ''), null, {timeout: 90000});
    check((await page.textContent('#outcome')) === 'applied', `outcome ${await page.textContent('#outcome')}`);

    log('the modules page lists both running');
    await page.click('nav a[href="#/modules"]');
    await page.waitForFunction(() => ['web', 'two'].every((m) => {
      const td = document.querySelector(`tr[data-module="${m}"] td.status`);
      return td && td.textContent === 'running';
    }), null, {timeout: 30000});
    await shot(page, 'modules');

    log("watch two's logs (follow)");
    await page.click('tr[data-module="two"] a');
    await page.waitForFunction(() => /testmod starting two/.test((document.getElementById('logs') || {textContent: ''}).textContent));
    const before = (await page.textContent('#logs')).split('\n').length;
    await page.waitForFunction((n) => (document.getElementById('logs') || {textContent: ''}).textContent.split('\n').length > n + 1,
                               before, {timeout: 15000});
    await page.fill('#log-search', 'tick');
    await page.waitForFunction(() => (document.getElementById('logs') || {textContent: ''}).textContent.split('\n')
        .every((l) => l.includes('tick')));
    await page.fill('#log-search', '');
    await shot(page, 'logs');

    log('stop two, then start it');
    await page.click('#module-stop');
    await page.waitForFunction(() => (document.getElementById('module-status') || {textContent: ''}).textContent === 'stopped',
                               null, {timeout: 30000});
    await page.click('#module-start');
    await page.waitForFunction(() => (document.getElementById('module-status') || {textContent: ''}).textContent === 'running',
                               null, {timeout: 30000});

    log("twins: web's twin, a desired patch refused, then one applied");
    await page.click('nav a[href="#/twins"]');
    await page.waitForSelector('#twin-target option[value="modules/web"]', {state: 'attached'});
    check(await page.$('#twin-target option[value="devices/leaf1"]'), 'leaf1 is not among the twins');
    await page.selectOption('#twin-target', 'modules/web');
    await page.waitForSelector('#twin-desired');
    await page.fill('#twin-patch', '{"color": ');
    await page.click('#twin-update');
    await page.waitForSelector('#twin-patch-error');
    check(/not valid JSON/.test(await page.textContent('#twin-patch-error')), 'no JSON error shown');
    await page.fill('#twin-patch', '[1]');
    await page.click('#twin-update');
    await page.waitForFunction(() => /^400/.test((document.getElementById('twin-patch-error') || {}).textContent || ''));
    console.log(`[dashboard.js]   refused: ${await page.textContent('#twin-patch-error')}`);
    await page.fill('#twin-patch', '{"color": "blue", "level": 3}');
    await page.click('#twin-update');
    await page.waitForSelector('#twin-patched');
    await page.waitForFunction(() => {
      try {
        const d = JSON.parse((document.getElementById('twin-desired') || {textContent: ''}).textContent);
        return d.color === 'blue' && d.level === 3;
      } catch (e) { return false; }
    });

    log('direct methods: echo answered with its payload, silent times out');
    await page.fill('#method-name', 'echo');
    await page.fill('#method-payload', '{"x": 1}');
    await page.fill('#method-timeout', '5');
    await page.click('#method-invoke');
    await page.waitForSelector('#method-result');
    check((await page.textContent('#method-status')) === '200', `status ${await page.textContent('#method-status')}`);
    const resp = JSON.parse(await page.textContent('#method-response'));
    check(resp.method === 'echo' && resp.echo.x === 1, `response ${JSON.stringify(resp)}`);
    await shot(page, 'twins');
    await page.fill('#method-name', 'silent');
    await page.fill('#method-timeout', '2');
    await page.click('#method-invoke');
    await page.waitForSelector('#method-error', {timeout: 15000});
    const silent = await page.textContent('#method-error');
    console.log(`[dashboard.js]   silent: ${silent}`);
    check(/^504/.test(silent), `silent: ${silent}`);

    log("twins: the leaf device leaf1's desired properties");
    await page.selectOption('#twin-target', 'devices/leaf1');
    await page.waitForSelector('#twin-desired');
    await page.fill('#twin-patch', '{"mode": "eco"}');
    await page.click('#twin-update');
    await page.waitForSelector('#twin-patched');
    await page.waitForFunction(() => /"eco"/.test((document.getElementById('twin-desired') || {textContent: ''}).textContent));

    log('the hub page: tables of the upstream link, connections, sessions, queues, counters');
    await page.click('nav a[href="#/hub"]');
    await page.waitForSelector('#hub-counters tr[data-counter="received"]');
    await page.waitForFunction(() => /web/.test((document.getElementById('hub-sessions') || {}).textContent || ''));
    check(await page.$('#hub-connections tr[data-key="open"]'), 'no open connections row');
    check(await page.$('#hub-upstream tr[data-key="enabled"]'), 'no upstream row');
    await page.waitForFunction(() => /\$upstream/.test((document.getElementById('hub-queues') || {}).textContent || ''));
    await shot(page, 'hub');

    log('charts: messages per second, queue depth and memory per module drawn with data');
    await page.click('nav a[href="#/charts"]');
    for (const id of ['chart-messages', 'chart-queues', 'chart-memory']) {
      await page.waitForFunction((i) => {
        const el = document.getElementById(i);
        return el && Number(el.dataset.points) > 0 && el.querySelector('canvas');
      }, id, {timeout: 30000});
    }
    check(/web/.test(await page.textContent('#chart-memory')), 'web is not in the memory chart');
    await shot(page, 'charts');

    log('roll back to an earlier deployment (not the previous one) from the history: its plan first');
    const to = env('ROLLBACK_TO');
    await page.click('nav a[href="#/deployment"]');
    await page.waitForSelector(`#history tr[data-id="${to}"] button.rollback`);
    check(!(await page.$('#history tr.current button.rollback')), 'the deployment in force has a rollback');
    await page.click(`#history tr[data-id="${to}"] button.rollback`);
    await page.waitForSelector('#rollback-plan');
    const rbPlan = await page.$$eval('#rollback-plan ul.plan li', (lis) => lis.map((li) => li.textContent.trim()));
    console.log(`[dashboard.js]   rollback plan: ${JSON.stringify(rbPlan)}`);
    check(rbPlan.some((p) => /^create old\b/.test(p)) && rbPlan.some((p) => /^remove two\b/.test(p)),
          'the rollback plan creates old and removes two');
    const rbAdded = await page.$$eval('#rollback-plan pre.diff .dadd', (s) => s.map((x) => x.textContent));
    check(rbAdded.some((l) => /"old"/.test(l)), `the rollback's diff adds no "old": ${JSON.stringify(rbAdded)}`);
    await shot(page, 'history');
    await page.click('#rollback-apply');
    await page.waitForFunction(() => /rolled back|rollback/.test(
        (document.getElementById('outcome') || {}).textContent || ''), null, {timeout: 90000});
    check((await page.textContent('#outcome')) === `rolled back to ${to}`, `outcome ${await page.textContent('#outcome')}`);
    await page.waitForFunction(() => {
      const row = document.querySelector('#history tbody tr');
      return row && /rollback/.test(row.textContent) && /applied \(in force\)/.test(row.textContent);
    });
    await page.click('nav a[href="#/modules"]');
    await page.waitForSelector('tr[data-module="web"]');
    await page.waitForFunction(() => !document.querySelector('tr[data-module="two"]') &&
                               document.querySelector('tr[data-module="old"]'), null, {timeout: 30000});

    log('VMs: f1 listed stopped; its CPUs changed, started, a port forward added, its console, stopped');
    await page.click('nav a[href="#/vms"]');
    await page.waitForFunction(() => {
      const td = document.querySelector('tr[data-vm="f1"] td.vm-state');
      return td && td.textContent === 'stopped';
    }, null, {timeout: 30000});
    await page.click('tr[data-vm="f1"] a');
    await page.waitForSelector('#vm-resources');
    await page.fill('#vm-cpus', '2');
    await page.click('#vm-resources-save');
    await page.waitForFunction(() => /resources saved/.test((document.getElementById('vm-done') || {}).textContent || ''));
    await page.waitForFunction(() => /cpus\s*2/.test((document.getElementById('vm-def') || {textContent: ''}).textContent));
    await page.click('#vm-start');
    await page.waitForFunction(() => (document.getElementById('vm-state') || {textContent: ''}).textContent === 'running', null, {timeout: 90000});
    await page.waitForFunction((p) => (document.getElementById('vm-ports') || {textContent: ''}).textContent.includes(p),
                               env('VM_HUB_PORT'), {timeout: 20000});
    await page.fill('#vm-port', `${env('VM_MAN_PORT')}:80`);
    await page.click('#vm-port-add');
    await page.waitForFunction((p) => (document.getElementById('vm-ports') || {textContent: ''}).textContent.includes(p),
                               env('VM_MAN_PORT'), {timeout: 20000});
    await page.waitForFunction(() => /fake-qemu: the scripted guest's console/.test((document.getElementById('vm-console') || {textContent: ''}).textContent),
                               null, {timeout: 20000});
    await shot(page, 'vm');
    await page.click('#vm-stop');
    await page.waitForFunction(() => (document.getElementById('vm-state') || {textContent: ''}).textContent === 'stopped', null, {timeout: 90000});

    log('VMs: create f2 from the cached image; a refused name is shown');
    await page.click('nav a[href="#/vms"]');
    await page.waitForSelector('#vm-create');
    await page.fill('#vm-new-name', 'Bad_Name');
    await page.click('#vm-create-button');
    await page.waitForSelector('p.error');
    await page.fill('#vm-new-name', 'f2');
    await page.fill('#vm-new-image', env('VM_KEY'));
    await page.fill('#vm-new-disk', '2G');
    await page.click('#vm-create-button');
    await page.waitForSelector('tr[data-vm="f2"]', {timeout: 30000});
    await shot(page, 'vms');

    if (process.env.REMOTE_ADDRESS) {
      await remote(page);
      await fleet(page);
    }

    log('log out: the session is gone');
    await page.click('#logout');
    await page.waitForURL(/\/login$/);
    r = await pageFetch(page, 'GET', '/api/modules');
    check(r.status === 401, `after logout: ${r.status}`);
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join('; ')}`);
    log('ok');
  } catch (e) {
    console.error(`[dashboard.js] FAIL at "${step}": ${e.message}`);
    await page.screenshot({path: path.join(SHOTS, 'failure.png')}).catch(() => {});
    console.error(`[dashboard.js] page: ${page.url()}\n${(await page.content().catch(() => '')).slice(0, 4000)}`);
    if (pageErrors.length) console.error(`[dashboard.js] page errors: ${pageErrors.join('; ')}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`[dashboard.js] ${e.stack || e}`);
  process.exit(1);
});
