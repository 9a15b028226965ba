// The wasmcni glue of the namespace-subnets allocator (strategy.js holds the strategy).
//
// Built into a component by `wasmcni-plugin-build` with componentize-js, against world.wit,
// with every WASI feature of the JavaScript engine left out: the component imports only the
// wasmcni interfaces of its world, so it needs no `wasi` grant.
import { get } from 'wasmcni:plugin/config@0.3.0';
import { enis, node, occupancy, subnets } from 'wasmcni:plugin/pool-view@0.3.0';
import { assignIps, createEni } from 'wasmcni:plugin/eni-ops@0.3.0';
import { log } from 'wasmcni:plugin/log@0.3.0';
import { choose, describe, parseSettings, plan } from './strategy.js';

// A thrown string is the `result`'s error.
function settings() {
  try {
    return parseSettings(get);
  } catch (e) {
    throw String(e.message ?? e);
  }
}

export const allocator = {
  init() {
    settings();
  },

  allocate(pod) {
    const chosen = settings();
    const address = choose(pod.namespace, occupancy(), enis(), chosen);
    if (address === null) {
      throw `no free address on ${describe(pod.namespace, chosen)}; the plan is adding some`;
    }
    return { tag: 'v4', val: address };
  },

  plan() {
    const chosen = settings();
    const { requests, warnings } = plan(node(), enis(), occupancy(), subnets(), chosen);
    for (const warning of warnings) log('warn', warning);
    for (const request of requests) {
      try {
        if (request.kind === 'assign') {
          assignIps(request.eniId, request.count);
        } else {
          createEni({
            subnetId: request.subnetId,
            securityGroups: request.securityGroups,
            secondaryIps: request.count,
            prefixes: 0,
          });
        }
      } catch (refused) {
        log('warn', `${request.kind} refused by the host: ${refused?.payload ?? refused}`);
      }
    }
  },
};
