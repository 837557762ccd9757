// main.js — entry point of the ledge-node-module image: runs /app/$NODE_MODULE_SCRIPT, one of
// the programs in tests/node, as a module (the container's PID 1, so it handles SIGTERM itself).
'use strict';
const path = require('path');

const name = process.env.NODE_MODULE_SCRIPT || '';
if (!/^[a-z0-9][a-z0-9-]*\.js$/.test(name) || name === 'main.js') {
  console.error(`ledge-node-module: set NODE_MODULE_SCRIPT to a script in /app (got "${name}")`);
  process.exit(2);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
require(path.join(__dirname, name));
