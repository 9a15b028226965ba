"""The wasmcni glue of the namespace-subnets allocator (strategy.py holds the strategy).

Built into a component by `wasmcni-plugin-build` with componentize-py, against world.wit:
the world imports only what the strategy uses, so the grants are exactly those.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, eni_ops, log, pool_view, types

import strategy


def settings():
    try:
        return strategy.parse_settings(config.get)
    except strategy.SettingsError as e:
        raise Err(str(e))


class Allocator(exports.Allocator):
    def init(self) -> None:
        settings()

    def allocate(self, pod: types.Pod) -> types.IpAddress:
        chosen = settings()
        address = strategy.choose(
            pod.namespace, pool_view.occupancy(), pool_view.enis(), chosen
        )
        if address is None:
            raise Err(
                f"no free address on {strategy.describe(pod.namespace, chosen)}; "
                "the plan is adding some"
            )
        return types.IpAddress_V4(address)

    def plan(self) -> None:
        chosen = settings()
        requests, warnings = strategy.plan(
            pool_view.node(),
            pool_view.enis(),
            pool_view.occupancy(),
            pool_view.subnets(),
            chosen,
        )
        for warning in warnings:
            log.log(log.Level.WARN, warning)
        for request in requests:
            try:
                if request[0] == "assign":
                    _, eni_id, count = request
                    eni_ops.assign_ips(eni_id, count)
                else:
                    _, subnet_id, groups, count = request
                    eni_ops.create_eni(
                        eni_ops.NewEni(
                            subnet_id=subnet_id,
                            security_groups=groups,
                            secondary_ips=count,
                            prefixes=0,
                        )
                    )
            except Err as refused:
                log.log(log.Level.WARN, f"{request[0]} refused by the host: {refused.value}")
