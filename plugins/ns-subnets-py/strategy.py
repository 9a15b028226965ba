"""Namespace subnets: each namespace's pods get addresses on that namespace's own subnets.

Pure Python, no wasmcni import: `app.py` binds it to the WIT interfaces, and
`test_strategy.py` runs it under plain CPython (`python3 -m unittest`).

Settings (`[plugins.config]`):

- ``NAMESPACES``: ``"team-a=subnet-0aa,subnet-0bb;team-b=subnet-0cc"``. A pod of a listed
  namespace is placed only on an ENI in one of its subnets; every other pod only on an ENI in
  none of them (the node's shared ENIs).
- ``WARM_IPS`` (default 2): free addresses the plan keeps ready for each namespace and for the
  shared ENIs.
- ``SECURITY_GROUPS`` (default ``node``): security groups of the ENIs the plan creates, comma
  separated; ``node`` is the primary ENI's.

The records it reads are those of ``pool-view`` (attribute names as the bindings give them:
``eni_id``, ``lowest_free``, ``subnet_id``...), so a test passes plain objects.
"""

SHARED = None
"""The group of every namespace not listed: the ENIs in no listed subnet."""

MAX_WARM_IPS = 64


class SettingsError(ValueError):
    """A setting the plugin refuses, with the reason in words."""


class Settings:
    """The parsed settings."""

    def __init__(self, namespaces, warm_ips, security_groups):
        self.namespaces = namespaces
        self.warm_ips = warm_ips
        self.security_groups = security_groups

    def group_of(self, namespace):
        """The group (a namespace, or SHARED) whose subnets a pod of `namespace` goes to."""
        return namespace if namespace in self.namespaces else SHARED

    def mapped_subnets(self):
        return {subnet for subnets in self.namespaces.values() for subnet in subnets}


def parse_settings(get):
    """Parses the settings; `get(key)` returns a setting or None."""
    namespaces = {}
    owner = {}
    text = (get("NAMESPACES") or "").strip()
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        namespace, sep, subnets = entry.partition("=")
        namespace = namespace.strip()
        if not sep or not namespace:
            raise SettingsError(
                f"NAMESPACES entry {entry!r} is not namespace=subnet-id[,subnet-id...]"
            )
        if namespace in namespaces:
            raise SettingsError(f"NAMESPACES lists namespace {namespace!r} twice")
        listed = [s.strip() for s in subnets.split(",") if s.strip()]
        if not listed:
            raise SettingsError(f"NAMESPACES gives namespace {namespace!r} no subnet")
        for subnet in listed:
            if not subnet.startswith("subnet-") or len(subnet) <= len("subnet-"):
                raise SettingsError(
                    f"NAMESPACES: {subnet!r} (namespace {namespace!r}) is not a subnet id"
                )
            if subnet in owner:
                raise SettingsError(
                    f"NAMESPACES: subnet {subnet} is given to both {owner[subnet]!r} and "
                    f"{namespace!r}; a subnet serves one namespace"
                )
            owner[subnet] = namespace
        namespaces[namespace] = listed
    warm = (get("WARM_IPS") or "2").strip()
    if not warm.isdigit() or int(warm) > MAX_WARM_IPS:
        raise SettingsError(f"WARM_IPS {warm!r} is not a whole number from 0 to {MAX_WARM_IPS}")
    groups = [g.strip() for g in (get("SECURITY_GROUPS") or "node").split(",") if g.strip()]
    for group in groups:
        if group != "node" and not group.startswith("sg-"):
            raise SettingsError(f"SECURITY_GROUPS: {group!r} is neither node nor an sg- id")
    return Settings(namespaces, int(warm), groups or ["node"])


def enis_of(group, enis, settings):
    """The ENIs whose addresses pods of `group` may get."""
    if group is SHARED:
        mapped = settings.mapped_subnets()
        return [eni for eni in enis if eni.subnet_id not in mapped]
    subnets = settings.namespaces[group]
    return [eni for eni in enis if eni.subnet_id in subnets]


def choose(namespace, occupancy, enis, settings):
    """The address for a pod of `namespace`: the lowest free one of the fullest block on its
    group's ENIs (so ENIs drain evenly), or None when the group has none free."""
    group = settings.group_of(namespace)
    ids = {eni.id for eni in enis_of(group, enis, settings)}
    candidates = [
        b for b in occupancy
        if b.block.eni_id in ids and b.free > 0 and b.lowest_free is not None
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda b: (b.free, b.lowest_free))
    return best.lowest_free


def describe(namespace, settings):
    """A group in words, for messages."""
    group = settings.group_of(namespace)
    if group is SHARED:
        return "the node's shared ENIs"
    return f"namespace {group}'s subnets ({', '.join(settings.namespaces[group])})"


def plan(node, enis, occupancy, subnets, settings):
    """The requests that bring every group to WARM_IPS free addresses: ("assign", eni_id,
    count) on a group's ENI with room, else ("create", subnet_id, security_groups, count) in
    the group's subnet with the most free addresses. Also returns warnings."""
    limits = node.limits
    requests, warnings = [], []
    if limits.max_enis == 0 or limits.ipv4_per_eni < 2:
        return requests, warnings
    per_eni = limits.ipv4_per_eni - 1
    free_on = {}
    used_on = {}
    for b in occupancy:
        if b.block.eni_id is None:
            continue
        free_on[b.block.eni_id] = free_on.get(b.block.eni_id, 0) + b.free
        used_on[b.block.eni_id] = used_on.get(b.block.eni_id, 0) + b.usable
    primary = next((eni for eni in enis if eni.primary), None)
    node_groups = list(primary.security_groups) if primary else []
    groups = [g if g != "node" else None for g in settings.security_groups]
    security_groups = sorted({g for g in groups if g} | (set(node_groups) if None in groups else set()))
    eni_count = len(enis)
    mapped = settings.mapped_subnets()
    for group in [*settings.namespaces, SHARED]:
        mine = enis_of(group, enis, settings)
        need = settings.warm_ips - sum(free_on.get(eni.id, 0) for eni in mine)
        if need <= 0:
            continue
        for eni in sorted(mine, key=lambda e: e.device_number):
            room = per_eni - used_on.get(eni.id, 0)
            if room > 0 and need > 0:
                count = min(room, need)
                requests.append(("assign", eni.id, count))
                need -= count
        if need <= 0:
            continue
        if eni_count >= limits.max_enis:
            warnings.append(
                f"{group or 'shared'}: {need} more addresses wanted, but the node has its "
                f"{limits.max_enis} ENIs"
            )
            continue
        if group is SHARED:
            if primary is None or primary.subnet_id in mapped:
                warnings.append("shared: the node's subnet is given to a namespace; no shared ENI")
                continue
            candidates = [s for s in subnets if s.id == primary.subnet_id]
        else:
            candidates = [s for s in subnets if s.id in settings.namespaces[group]]
        candidates = [s for s in candidates if s.free_addresses >= 1 + need]
        if not candidates:
            warnings.append(
                f"{group or 'shared'}: no subnet of the group is offered with {1 + need} free "
                "addresses (grant eni-ops its subnets; same availability zone)"
            )
            continue
        subnet = max(candidates, key=lambda s: (s.free_addresses, s.id))
        requests.append(("create", subnet.id, security_groups, min(need, per_eni)))
        eni_count += 1
    return requests, warnings
