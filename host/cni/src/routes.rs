//! wasmcni's route keys of the network configuration: what the interface routes inside the
//! pod. They matter for an interface beside another network's (podman's `--network a,b`, a
//! Multus `NetworkAttachmentDefinition`), which must not take the pod's default route:
//!
//! ```json
//! { "type": "wasmcni", "defaultRoute": false,
//!   "routes": [{ "dst": "10.20.0.0/16" }], "routeTable": 101 }
//! ```
//!
//! * `defaultRoute`: `true` always installs a default route through the pod's gateway, `false`
//!   never does; absent, one is installed only when the pod has none of that family yet.
//! * `routes`: further destinations through the gateway, in the IPAM plugins' `{"dst": ...}`
//!   shape; the gateway is always wasmcni's own, so `gw` is refused.
//! * `routeTable`: the interface's routes go in this pod-side table, with the rule `from <pod
//!   address> lookup <table>` in the pod (source-based routing for a second interface).

use crate::decode::{
    as_array, as_bool, as_object, as_str, describe, field, index, join, opt_uint, FieldError,
};
use ipnet::IpNet;
use serde_json::{Map, Value};

/// The route keys as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// `defaultRoute`; `None` when absent.
    pub default_route: Option<bool>,
    /// `routes[].dst`, each a non-default network with its host bits cleared (`10.20.1.5/16`
    /// is `10.20.0.0/16`, as the kernel stores it), each once, in the order given.
    pub destinations: Vec<IpNet>,
    /// `routeTable`.
    pub table: Option<u32>,
}

impl RouteConfig {
    /// Reads the keys from the configuration object; errors name the key and the value.
    pub(crate) fn from_object(obj: &Map<String, Value>) -> Result<RouteConfig, FieldError> {
        let default_route = field(obj, "defaultRoute")
            .map(|v| as_bool(v, "defaultRoute"))
            .transpose()?;
        let mut destinations: Vec<IpNet> = Vec::new();
        if let Some(v) = field(obj, "routes") {
            for (i, route) in as_array(v, "routes")?.iter().enumerate() {
                let dst = destination(route, &index("routes", i))?;
                if !destinations.contains(&dst) {
                    destinations.push(dst);
                }
            }
        }
        let table = opt_uint(obj, "routeTable", "", u32::MAX.into())?
            .map(|t| t as u32)
            .map(|t| check_table(t).map(|()| t))
            .transpose()?;
        Ok(RouteConfig {
            default_route,
            destinations,
            table,
        })
    }
}

fn destination(route: &Value, path: &str) -> Result<IpNet, FieldError> {
    let obj = as_object(route, path)?;
    if let Some(gw) = field(obj, "gw") {
        return Err(FieldError::new(
            join(path, "gw"),
            format!("{gw}: wasmcni routes through the pod's own gateway (169.254.1.1 or fe80::1); remove \"gw\""),
        ));
    }
    let dst_path = join(path, "dst");
    let value = field(obj, "dst").ok_or_else(|| FieldError::new(&dst_path, "missing"))?;
    let dst: IpNet = as_str(value, &dst_path)?.parse().map_err(|_| {
        FieldError::new(
            &dst_path,
            format!("{} is not a CIDR such as 10.20.0.0/16", describe(value)),
        )
    })?;
    if dst.prefix_len() == 0 {
        return Err(FieldError::new(
            dst_path,
            format!("{dst} is a default route: say \"defaultRoute\": true instead"),
        ));
    }
    Ok(dst.trunc())
}

fn check_table(table: u32) -> Result<(), FieldError> {
    match table {
        0 | 253..=255 => Err(FieldError::new(
            "routeTable",
            format!("{table} is a table the kernel reserves (0 unspecified, 253 default, 254 main, 255 local); choose another, or leave routeTable out for the main table"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RouteConfig, String> {
        RouteConfig::from_object(v.as_object().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_keys_leave_the_default_route_to_the_pod() {
        assert_eq!(parse(json!({})).unwrap(), RouteConfig::default());
    }

    #[test]
    fn keys_parse_as_go_matches_them() {
        let config = parse(json!({
            "DefaultRoute": false,
            "routes": [{"dst": "10.20.0.0/16"}, {"dst": "fd00::/64"}],
            "routeTable": 101,
        }))
        .unwrap();
        assert_eq!(config.default_route, Some(false));
        assert_eq!(
            config.destinations,
            vec![
                "10.20.0.0/16".parse::<IpNet>().unwrap(),
                "fd00::/64".parse().unwrap()
            ]
        );
        assert_eq!(config.table, Some(101));
    }

    #[test]
    fn destinations_are_networks_each_once() {
        let config = parse(json!({
            "routes": [{"dst": "10.20.1.5/16"}, {"dst": "10.20.0.0/16"}, {"dst": "fd00::7/64"}],
        }))
        .unwrap();
        assert_eq!(
            config.destinations,
            vec![
                "10.20.0.0/16".parse::<IpNet>().unwrap(),
                "fd00::/64".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (config, expected) in [
            (
                json!({"defaultRoute": "no"}),
                "defaultRoute: expected a boolean",
            ),
            (
                json!({"routes": {"dst": "10.0.0.0/8"}}),
                "routes: expected an array",
            ),
            (
                json!({"routes": [{"dst": "10.0.0.0"}]}),
                "routes[0].dst: \"10.0.0.0\" is not a CIDR",
            ),
            (json!({"routes": [{}]}), "routes[0].dst: missing"),
            (
                json!({"routes": [{"dst": "0.0.0.0/0"}]}),
                "say \"defaultRoute\": true",
            ),
            (
                json!({"routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}]}),
                "routes[0].gw: \"10.0.0.1\": wasmcni routes through",
            ),
            (
                json!({"routeTable": 254}),
                "routeTable: 254 is a table the kernel reserves",
            ),
            (json!({"routeTable": 0}), "routeTable: 0 is a table"),
            (
                json!({"routeTable": -1}),
                "routeTable: expected a non-negative integer",
            ),
        ] {
            let error = parse(config.clone()).unwrap_err();
            assert!(error.contains(expected), "{config}: {error}");
        }
    }
}
