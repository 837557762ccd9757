// workload-call.js — one workload API request from inside a module (`docker exec <module> node
// /app/workload-call.js METHOD PATH [BODY]`): the socket comes from IOTEDGE_WORKLOADURI, as an
// SDK finds it; "{m}" and "{g}" in PATH become the module's id and generation id. Prints one
// JSON line {"status": N, "body": <reply JSON or text>}; exits 0 whatever the status, 1 if the
// request could not be made.
'use strict';
const http = require('http');

const [method, rawPath, body] = process.argv.slice(2);
const uri = process.env.IOTEDGE_WORKLOADURI || '';
if (!method || !rawPath || !uri.startsWith('unix://')) {
  console.error('usage: workload-call.js METHOD PATH [BODY]   (needs IOTEDGE_WORKLOADURI=unix://...)');
  process.exit(2);
}
const path = rawPath
  .replace('{m}', encodeURIComponent(process.env.IOTEDGE_MODULEID || ''))
  .replace('{g}', encodeURIComponent(process.env.IOTEDGE_MODULEGENERATIONID || ''));
const req = http.request(
  { socketPath: uri.slice('unix://'.length), method, path, headers: { 'Content-Type': 'application/json' } },
  (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (text += d));
    res.on('end', () => {
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch (_) { /* not JSON: keep the text */ }
      process.stdout.write(JSON.stringify({ status: res.statusCode, body: parsed }) + '\n');
    });
  });
req.on('error', (err) => {
  console.error(`workload-call: ${err.message}`);
  process.exit(1);
});
req.end(body);
