"""Unit tests of strategy.py under plain CPython: `python3 -m unittest` in this directory."""

import unittest
from types import SimpleNamespace as R

import strategy

SETTINGS = {"NAMESPACES": "team-a=subnet-0aa,subnet-0ab; team-b=subnet-0bb", "WARM_IPS": "2"}


def settings(values=SETTINGS):
    return strategy.parse_settings(values.get)


def eni(id, subnet, device, primary=False):
    return R(id=id, subnet_id=subnet, device_number=device, primary=primary,
             security_groups=["sg-0node"])


def block(eni_id, address, free):
    return R(block=R(eni_id=eni_id), usable=1, free=free,
             lowest_free=address if free else None)


ENIS = [eni("eni-0", "subnet-0node", 0, primary=True), eni("eni-a", "subnet-0aa", 1),
        eni("eni-b", "subnet-0bb", 2)]
NODE = R(limits=R(max_enis=4, ipv4_per_eni=10))
SUBNETS = [R(id=s, free_addresses=100) for s in ["subnet-0node", "subnet-0aa", "subnet-0ab", "subnet-0bb"]]


class Settings(unittest.TestCase):
    def test_parses_namespaces_and_defaults(self):
        parsed = settings()
        self.assertEqual(parsed.namespaces["team-a"], ["subnet-0aa", "subnet-0ab"])
        self.assertEqual(parsed.warm_ips, 2)
        self.assertEqual(parsed.security_groups, ["node"])
        self.assertIs(parsed.group_of("kube-system"), strategy.SHARED)

    def test_refuses_what_it_cannot_honour(self):
        for values, words in [
            ({"NAMESPACES": "team-a"}, "is not namespace="),
            ({"NAMESPACES": "team-a=vpc-1"}, "is not a subnet id"),
            ({"NAMESPACES": "a=subnet-01;b=subnet-01"}, "both"),
            ({"NAMESPACES": "a=subnet-01;a=subnet-02"}, "twice"),
            ({"WARM_IPS": "-1"}, "WARM_IPS"),
            ({"WARM_IPS": "65"}, "WARM_IPS"),
            ({"SECURITY_GROUPS": "default"}, "SECURITY_GROUPS"),
        ]:
            with self.assertRaises(strategy.SettingsError) as refused:
                settings(values)
            self.assertIn(words, str(refused.exception))


class Choose(unittest.TestCase):
    def test_a_namespace_gets_only_its_own_subnets(self):
        occupancy = [block("eni-0", 10, 1), block("eni-a", 20, 1), block("eni-b", 30, 1)]
        self.assertEqual(strategy.choose("team-a", occupancy, ENIS, settings()), 20)
        self.assertEqual(strategy.choose("team-b", occupancy, ENIS, settings()), 30)
        self.assertEqual(strategy.choose("default", occupancy, ENIS, settings()), 10)
        self.assertEqual(strategy.choose(None, occupancy, ENIS, settings()), 10)

    def test_none_when_the_group_is_full_even_if_others_are_not(self):
        occupancy = [block("eni-0", 10, 1), block("eni-a", 20, 0)]
        self.assertIsNone(strategy.choose("team-a", occupancy, ENIS, settings()))


class Plan(unittest.TestCase):
    def test_tops_up_each_group_on_its_own_enis(self):
        occupancy = [block("eni-0", 10, 1), block("eni-a", 20, 0), block("eni-b", 30, 2)]
        requests, warnings = strategy.plan(NODE, ENIS, occupancy, SUBNETS, settings())
        self.assertEqual(requests, [("assign", "eni-a", 2), ("assign", "eni-0", 1)])
        self.assertEqual(warnings, [])

    def test_creates_an_eni_in_the_group_subnet_when_its_enis_are_full(self):
        full = [block("eni-a", 20 + i, 0) for i in range(9)]
        occupancy = [block("eni-0", 10, 2), block("eni-b", 30, 2), *full]
        requests, _ = strategy.plan(NODE, ENIS, occupancy, SUBNETS, settings())
        self.assertEqual(requests, [("create", "subnet-0ab", ["sg-0node"], 2)])

    def test_warns_when_the_node_has_all_its_enis(self):
        node = R(limits=R(max_enis=3, ipv4_per_eni=2))
        occupancy = [block("eni-0", 10, 2), block("eni-a", 20, 0), block("eni-b", 30, 2)]
        requests, warnings = strategy.plan(node, ENIS, occupancy, SUBNETS, settings())
        self.assertEqual(requests, [])
        self.assertIn("team-a", warnings[0])

    def test_plans_nothing_on_a_static_node(self):
        node = R(limits=R(max_enis=0, ipv4_per_eni=0))
        self.assertEqual(strategy.plan(node, ENIS, [], SUBNETS, settings()), ([], []))


if __name__ == "__main__":
    unittest.main()
