// Builds the component: `node build.mjs OUT.wasm` (default
// js-round-robin.wasm here). What `cargo xtask plugins` runs.
//
// Every WASI feature of the JavaScript engine is disabled, so the component
// imports only weir's own interfaces: no stdio (console.log goes nowhere;
// log through weir:plugin/log), no clocks, no random (Math.random is
// deterministic), no fetch.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const out = process.argv[2] ?? here('js-round-robin.wasm');

const { component } = await componentize({
  sourcePath: here('src/round-robin.js'),
  witPath: here('../../wit'),
  worldName: 'balancer',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
