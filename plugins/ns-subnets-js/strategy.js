// Namespace subnets: each namespace's pods get addresses on that namespace's own subnets.
//
// Plain JavaScript with no wasmcni import: plugin.js binds it to the WIT interfaces, and
// strategy.test.mjs runs it under Node (`node --test`). The same strategy, settings and
// messages as plugins/ns-subnets-py (see its strategy.py for the settings).
//
// The records it reads are those of `pool-view` as componentize-js gives them (camelCase
// fields, `undefined` for none), so a test passes plain objects.

export const MAX_WARM_IPS = 64;

export class SettingsError extends Error {}

// Parses the settings; `get(key)` returns a setting or undefined.
export function parseSettings(get) {
  const namespaces = new Map();
  const owner = new Map();
  const text = (get('NAMESPACES') ?? '').trim();
  for (const entry of text.split(';').map((part) => part.trim()).filter(Boolean)) {
    const at = entry.indexOf('=');
    const namespace = at < 0 ? '' : entry.slice(0, at).trim();
    if (at < 0 || !namespace) {
      throw new SettingsError(`NAMESPACES entry '${entry}' is not namespace=subnet-id[,subnet-id...]`);
    }
    if (namespaces.has(namespace)) {
      throw new SettingsError(`NAMESPACES lists namespace '${namespace}' twice`);
    }
    const listed = entry.slice(at + 1).split(',').map((s) => s.trim()).filter(Boolean);
    if (listed.length === 0) {
      throw new SettingsError(`NAMESPACES gives namespace '${namespace}' no subnet`);
    }
    for (const subnet of listed) {
      if (!subnet.startsWith('subnet-') || subnet.length <= 'subnet-'.length) {
        throw new SettingsError(`NAMESPACES: '${subnet}' (namespace '${namespace}') is not a subnet id`);
      }
      if (owner.has(subnet)) {
        throw new SettingsError(
          `NAMESPACES: subnet ${subnet} is given to both '${owner.get(subnet)}' and '${namespace}'; a subnet serves one namespace`,
        );
      }
      owner.set(subnet, namespace);
    }
    namespaces.set(namespace, listed);
  }
  const warm = (get('WARM_IPS') ?? '2').trim();
  if (!/^[0-9]+$/.test(warm) || Number(warm) > MAX_WARM_IPS) {
    throw new SettingsError(`WARM_IPS '${warm}' is not a whole number from 0 to ${MAX_WARM_IPS}`);
  }
  const groups = (get('SECURITY_GROUPS') ?? 'node').split(',').map((g) => g.trim()).filter(Boolean);
  for (const group of groups) {
    if (group !== 'node' && !group.startsWith('sg-')) {
      throw new SettingsError(`SECURITY_GROUPS: '${group}' is neither node nor an sg- id`);
    }
  }
  return { namespaces, owner, warmIps: Number(warm), securityGroups: groups.length ? groups : ['node'] };
}

// The group of a pod's namespace: the namespace itself when listed, else null (shared).
export function groupOf(namespace, settings) {
  return namespace !== undefined && settings.namespaces.has(namespace) ? namespace : null;
}

// The ENIs whose addresses pods of `group` may get.
export function enisOf(group, enis, settings) {
  if (group === null) return enis.filter((eni) => !settings.owner.has(eni.subnetId));
  const subnets = settings.namespaces.get(group);
  return enis.filter((eni) => subnets.includes(eni.subnetId));
}

// The address for a pod of `namespace`: the lowest free one of the fullest block on its
// group's ENIs, or null when the group has none free.
export function choose(namespace, occupancy, enis, settings) {
  const ids = new Set(enisOf(groupOf(namespace, settings), enis, settings).map((eni) => eni.id));
  let best = null;
  for (const b of occupancy) {
    if (!ids.has(b.block.eniId) || b.free === 0 || b.lowestFree === undefined) continue;
    if (best === null || b.free < best.free || (b.free === best.free && b.lowestFree < best.lowestFree)) {
      best = b;
    }
  }
  return best === null ? null : best.lowestFree;
}

// A group in words, for messages.
export function describe(namespace, settings) {
  const group = groupOf(namespace, settings);
  if (group === null) return "the node's shared ENIs";
  return `namespace ${group}'s subnets (${settings.namespaces.get(group).join(', ')})`;
}

// The requests that bring every group to WARM_IPS free addresses, and warnings:
// {kind: 'assign', eniId, count} or {kind: 'create', subnetId, securityGroups, count}.
export function plan(node, enis, occupancy, subnets, settings) {
  const { maxEnis, ipv4PerEni } = node.limits;
  const requests = [];
  const warnings = [];
  if (maxEnis === 0 || ipv4PerEni < 2) return { requests, warnings };
  const perEni = ipv4PerEni - 1;
  const freeOn = new Map();
  const usedOn = new Map();
  for (const b of occupancy) {
    if (b.block.eniId === undefined) continue;
    freeOn.set(b.block.eniId, (freeOn.get(b.block.eniId) ?? 0) + b.free);
    usedOn.set(b.block.eniId, (usedOn.get(b.block.eniId) ?? 0) + b.usable);
  }
  const primary = enis.find((eni) => eni.primary);
  const groups = new Set();
  for (const group of settings.securityGroups) {
    if (group !== 'node') groups.add(group);
    else for (const own of primary?.securityGroups ?? []) groups.add(own);
  }
  const securityGroups = [...groups].sort();
  let eniCount = enis.length;
  for (const group of [...settings.namespaces.keys(), null]) {
    const name = group ?? 'shared';
    const mine = enisOf(group, enis, settings);
    let need = settings.warmIps - mine.reduce((sum, eni) => sum + (freeOn.get(eni.id) ?? 0), 0);
    if (need <= 0) continue;
    for (const eni of [...mine].sort((a, b) => a.deviceNumber - b.deviceNumber)) {
      const room = perEni - (usedOn.get(eni.id) ?? 0);
      if (room > 0 && need > 0) {
        const count = Math.min(room, need);
        requests.push({ kind: 'assign', eniId: eni.id, count });
        need -= count;
      }
    }
    if (need <= 0) continue;
    if (eniCount >= maxEnis) {
      warnings.push(`${name}: ${need} more addresses wanted, but the node has its ${maxEnis} ENIs`);
      continue;
    }
    let candidates;
    if (group === null) {
      if (primary === undefined || settings.owner.has(primary.subnetId)) {
        warnings.push("shared: the node's subnet is given to a namespace; no shared ENI");
        continue;
      }
      candidates = subnets.filter((s) => s.id === primary.subnetId);
    } else {
      candidates = subnets.filter((s) => settings.namespaces.get(group).includes(s.id));
    }
    candidates = candidates.filter((s) => s.freeAddresses >= 1 + need);
    if (candidates.length === 0) {
      warnings.push(
        `${name}: no subnet of the group is offered with ${1 + need} free addresses (grant eni-ops its subnets; same availability zone)`,
      );
      continue;
    }
    const subnet = candidates.reduce((a, b) =>
      b.freeAddresses > a.freeAddresses || (b.freeAddresses === a.freeAddresses && b.id > a.id) ? b : a);
    requests.push({ kind: 'create', subnetId: subnet.id, securityGroups, count: Math.min(need, perEni) });
    eniCount += 1;
  }
  return { requests, warnings };
}
