// Unit tests of strategy.js under Node: `node --test` in this directory. The same cases as
// plugins/ns-subnets-py/test_strategy.py.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { choose, parseSettings, plan, SettingsError } from './strategy.js';

const SETTINGS = { NAMESPACES: 'team-a=subnet-0aa,subnet-0ab; team-b=subnet-0bb', WARM_IPS: '2' };
const settings = (values = SETTINGS) => parseSettings((key) => values[key]);
const eni = (id, subnetId, deviceNumber, primary = false) =>
  ({ id, subnetId, deviceNumber, primary, securityGroups: ['sg-0node'] });
const block = (eniId, address, free) =>
  ({ block: { eniId }, usable: 1, free, lowestFree: free ? address : undefined });
const ENIS = [eni('eni-0', 'subnet-0node', 0, true), eni('eni-a', 'subnet-0aa', 1), eni('eni-b', 'subnet-0bb', 2)];
const NODE = { limits: { maxEnis: 4, ipv4PerEni: 10 } };
const SUBNETS = ['subnet-0node', 'subnet-0aa', 'subnet-0ab', 'subnet-0bb'].map((id) => ({ id, freeAddresses: 100 }));

test('parses namespaces and defaults', () => {
  const parsed = settings();
  assert.deepEqual(parsed.namespaces.get('team-a'), ['subnet-0aa', 'subnet-0ab']);
  assert.equal(parsed.warmIps, 2);
  assert.deepEqual(parsed.securityGroups, ['node']);
});

test('refuses what it cannot honour', () => {
  for (const [values, words] of [
    [{ NAMESPACES: 'team-a' }, 'is not namespace='],
    [{ NAMESPACES: 'team-a=vpc-1' }, 'is not a subnet id'],
    [{ NAMESPACES: 'a=subnet-01;b=subnet-01' }, 'both'],
    [{ NAMESPACES: 'a=subnet-01;a=subnet-02' }, 'twice'],
    [{ WARM_IPS: '-1' }, 'WARM_IPS'],
    [{ WARM_IPS: '65' }, 'WARM_IPS'],
    [{ SECURITY_GROUPS: 'default' }, 'SECURITY_GROUPS'],
  ]) {
    assert.throws(() => settings(values), (e) => e instanceof SettingsError && e.message.includes(words));
  }
});

test('a namespace gets only its own subnets', () => {
  const occupancy = [block('eni-0', 10, 1), block('eni-a', 20, 1), block('eni-b', 30, 1)];
  assert.equal(choose('team-a', occupancy, ENIS, settings()), 20);
  assert.equal(choose('team-b', occupancy, ENIS, settings()), 30);
  assert.equal(choose('default', occupancy, ENIS, settings()), 10);
  assert.equal(choose(undefined, occupancy, ENIS, settings()), 10);
});

test('none when the group is full even if others are not', () => {
  const occupancy = [block('eni-0', 10, 1), block('eni-a', 20, 0)];
  assert.equal(choose('team-a', occupancy, ENIS, settings()), null);
});

test('tops up each group on its own ENIs', () => {
  const occupancy = [block('eni-0', 10, 1), block('eni-a', 20, 0), block('eni-b', 30, 2)];
  const { requests, warnings } = plan(NODE, ENIS, occupancy, SUBNETS, settings());
  assert.deepEqual(requests, [
    { kind: 'assign', eniId: 'eni-a', count: 2 },
    { kind: 'assign', eniId: 'eni-0', count: 1 },
  ]);
  assert.deepEqual(warnings, []);
});

test("creates an ENI in the group's subnet when its ENIs are full", () => {
  const full = Array.from({ length: 9 }, (_, i) => block('eni-a', 20 + i, 0));
  const occupancy = [block('eni-0', 10, 2), block('eni-b', 30, 2), ...full];
  const { requests } = plan(NODE, ENIS, occupancy, SUBNETS, settings());
  assert.deepEqual(requests, [{ kind: 'create', subnetId: 'subnet-0ab', securityGroups: ['sg-0node'], count: 2 }]);
});

test('warns when the node has all its ENIs', () => {
  const node = { limits: { maxEnis: 3, ipv4PerEni: 2 } };
  const occupancy = [block('eni-0', 10, 2), block('eni-a', 20, 0), block('eni-b', 30, 2)];
  const { requests, warnings } = plan(node, ENIS, occupancy, SUBNETS, settings());
  assert.deepEqual(requests, []);
  assert.match(warnings[0], /team-a/);
});

test('plans nothing on a static node', () => {
  const node = { limits: { maxEnis: 0, ipv4PerEni: 0 } };
  assert.deepEqual(plan(node, ENIS, [], SUBNETS, settings()), { requests: [], warnings: [] });
});
