// Round robin in JavaScript: each request goes to the next eligible backend
// in turn. The same policy as plugins/round-robin (Rust), built with
// componentize-js against weir's WIT (`wit/`, world `balancer`).
//
// componentize-js maps the WIT to JavaScript: interface `policy` is the
// exported object `policy` with camel-cased functions; `result<_, string>`
// is "return normally" or "throw the error string"; `option<backend-id>` is
// a number or `undefined`; enums are their case names as strings.

import { log } from 'weir:plugin/log@0.1.0';

/** Ids of the backends new requests may go to, in the order weir sent them. */
let eligible = [];
/** The index in `eligible` of the next pick. */
let next = 0;

/** Healthy and weight above 0, as the Rust SDK's `Backend::is_eligible`. */
function isEligible(backend) {
  return backend.health === 'healthy' && backend.weight > 0;
}

export const policy = {
  /** Takes no settings: anything but an empty table is refused. */
  init(config) {
    let settings;
    try {
      settings = JSON.parse(config);
    } catch (e) {
      throw `settings are not JSON: ${e.message}`;
    }
    const keys =
      settings !== null && typeof settings === 'object' && !Array.isArray(settings)
        ? Object.keys(settings)
        : null;
    if (keys === null || keys.length > 0) {
      throw `js-round-robin takes no settings, got ${config}`;
    }
    log('debug', 'js-round-robin ready');
  },

  /** Keeps the rotation's position: a changed set re-shapes it, no reset. */
  setBackends(backends) {
    eligible = backends.filter(isEligible).map((backend) => backend.id);
  },

  /** The next eligible backend, or none (`undefined`) when there is none. */
  select(_request) {
    if (next >= eligible.length) {
      // Wrapped around, or the set shrank under us.
      next = 0;
    }
    if (eligible.length === 0) {
      return undefined;
    }
    return eligible[next++];
  },
};
