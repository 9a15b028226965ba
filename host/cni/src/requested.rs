//! What a runtime may ask of the pod interface beyond the spec's fields: a MAC (the `mac`
//! capability, `CNI_ARGS` `MAC=`: six hex octets, unicast, not all zeros) and addresses (the
//! `ips` capability, `args.cni.ips`, `CNI_ARGS` `IP=`: at most one per family), which the
//! daemon serves from its pool or refuses.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::CniError;
use crate::netconf::NetConf;
use crate::request::CniRequest;

/// Addresses a runtime asked the pod to get, at most one per family, and where the request
/// came from (named in every error about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedAddresses {
    /// `runtimeConfig.ips`, `args.cni.ips` or `CNI_ARGS IP`.
    pub source: &'static str,
    /// The addresses, without the prefix lengths a request may carry (a pod gets a /32 or a
    /// /128 whatever the runtime's notation said).
    pub addresses: Vec<IpAddr>,
}

impl RequestedAddresses {
    /// The requested address of one family, if any.
    pub fn of_family(&self, v6: bool) -> Option<IpAddr> {
        self.addresses.iter().copied().find(|a| a.is_ipv6() == v6)
    }
}

/// The addresses a runtime asked for: the `ips` capability (`runtimeConfig.ips`, which
/// containerd and Multus send), else the netconf's `args.cni.ips`, else `CNI_ARGS` `IP=`
/// (podman's `--ip`; several separated by commas, as host-local reads it). Each is an address
/// or an address with a prefix length (`10.1.2.3/24`, the conventions' notation); at most one
/// per family. Empty requests are none. Malformed ones fail with code 7 naming the source and
/// the value, before anything is reserved.
pub fn addresses(
    request: &CniRequest,
    netconf: &NetConf,
) -> Result<Option<RequestedAddresses>, CniError> {
    let listed = |value: &&Value| value.as_array().is_none_or(|ips| !ips.is_empty());
    let in_netconf = netconf
        .raw
        .get("args")
        .and_then(|args| args.get("cni"))
        .and_then(|cni| cni.get("ips"))
        .filter(|ips| !ips.is_null());
    let (source, texts): (&'static str, Vec<(String, &str)>) = if let Some(ips) = netconf
        .runtime_config
        .capability("ips")
        .filter(|v| !v.is_null())
        .filter(listed)
    {
        ("runtimeConfig.ips", listed_texts("runtimeConfig.ips", ips)?)
    } else if let Some(ips) = in_netconf.filter(listed) {
        ("args.cni.ips", listed_texts("args.cni.ips", ips)?)
    } else if let Some(texts) = request.arg("IP").map(cni_args_ip).filter(|t| !t.is_empty()) {
        ("CNI_ARGS IP", texts)
    } else {
        return Ok(None);
    };
    let mut addresses: Vec<IpAddr> = Vec::with_capacity(texts.len());
    for (path, text) in texts {
        let address = parse_requested(text).map_err(|reason| {
            CniError::invalid_config(format!(
                "{path}: {} {reason}",
                crate::text::excerpt(&text.into())
            ))
        })?;
        if let Some(other) = addresses.iter().find(|a| a.is_ipv6() == address.is_ipv6()) {
            return Err(CniError::invalid_config(format!(
                "{source} asks for two {} addresses ({other} and {address}); a pod interface takes one per family",
                if address.is_ipv6() { "IPv6" } else { "IPv4" }
            )));
        }
        addresses.push(address);
    }
    Ok(Some(RequestedAddresses { source, addresses }))
}

/// The entries of `CNI_ARGS` `IP=` (comma-separated, as podman joins `--ip` and `--ip6`),
/// each with its position for errors; empty entries (a trailing comma) are skipped.
fn cni_args_ip(ip: &str) -> Vec<(String, &str)> {
    ip.split(',')
        .enumerate()
        .map(|(i, text)| (format!("CNI_ARGS IP (entry {})", i + 1), text.trim()))
        .filter(|(_, text)| !text.is_empty())
        .collect()
}

/// The strings of an `ips` list, each with its path for errors.
fn listed_texts<'a>(path: &str, ips: &'a Value) -> Result<Vec<(String, &'a str)>, CniError> {
    let Some(list) = ips.as_array() else {
        return Err(CniError::invalid_config(format!(
            "{path}: {} is not a list of addresses (expected [\"10.1.2.3\"] or [\"10.1.2.3/24\"])",
            crate::text::excerpt(ips)
        )));
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let path = format!("{path}[{i}]");
            match entry.as_str() {
                Some(text) => Ok((path, text)),
                None => Err(CniError::invalid_config(format!(
                    "{path}: {} is not an address (expected a string such as \"10.1.2.3\")",
                    crate::text::excerpt(entry)
                ))),
            }
        })
        .collect()
}

/// Parses one requested address (`10.1.2.3`, `10.1.2.3/24`, `2001:db8::5/64`) that a pod
/// interface may carry. The error completes "`<text>` ..." with what is wrong.
pub fn parse_requested(text: &str) -> Result<IpAddr, &'static str> {
    const FORMAT: &str =
        "is not an IP address (expected 10.1.2.3, 10.1.2.3/24, 2001:db8::5 or 2001:db8::5/64)";
    let address: IpAddr = match text.split_once('/') {
        Some(_) => text.parse::<IpNet>().map_err(|_| FORMAT)?.addr(),
        None => text.parse().map_err(|_| FORMAT)?,
    };
    if address.is_unspecified() {
        return Err("is the unspecified address, which no pod can be given");
    }
    if address.is_loopback() || address.is_multicast() {
        return Err("is a loopback or multicast address, which no pod interface can carry");
    }
    if address == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return Err("is the broadcast address, which no pod interface can carry");
    }
    Ok(address)
}

/// The MAC the runtime asked for the pod interface: the `mac` capability
/// (`runtimeConfig.mac`), else `CNI_ARGS` `MAC=` (podman's `--mac-address`); validated. An
/// empty request is none.
pub fn mac(request: &CniRequest, netconf: &NetConf) -> Result<Option<[u8; 6]>, CniError> {
    let capability = netconf
        .runtime_config
        .capability("mac")
        .filter(|value| value.as_str() != Some(""));
    let (source, text) = match capability {
        Some(Value::String(text)) => ("runtimeConfig.mac", text.as_str()),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "runtimeConfig.mac: {} is not a MAC address (expected a string, aa:bb:cc:dd:ee:ff)",
                crate::text::excerpt(other)
            )))
        }
        None => match request.arg("MAC").filter(|m| !m.is_empty()) {
            Some(text) => ("CNI_ARGS MAC", text),
            None => return Ok(None),
        },
    };
    parse_unicast(text).map(Some).map_err(|reason| {
        CniError::invalid_config(format!(
            "{source}: {} {reason}",
            crate::text::excerpt(&text.into())
        ))
    })
}

/// Parses `text` (`aa:bb:cc:dd:ee:ff`, case-insensitive) as a MAC address a pod interface may
/// carry. The error completes "`<text>` ..." with what is wrong.
pub fn parse_unicast(text: &str) -> Result<[u8; 6], &'static str> {
    const FORMAT: &str = "is not a MAC address (expected six hex octets, aa:bb:cc:dd:ee:ff)";
    let mut mac = [0u8; 6];
    let mut octets = text.split(':');
    for byte in &mut mac {
        let octet = octets.next().ok_or(FORMAT)?;
        // from_str_radix alone would take a sign ("+2").
        if octet.len() != 2 || !octet.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FORMAT);
        }
        *byte = u8::from_str_radix(octet, 16).map_err(|_| FORMAT)?;
    }
    if octets.next().is_some() {
        return Err(FORMAT);
    }
    if mac[0] & 1 == 1 {
        return Err(
            "is a multicast MAC address; an interface needs a unicast one (the first octet even)",
        );
    }
    if mac == [0; 6] {
        return Err("is the all-zeros MAC address, which no interface may carry");
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_addresses_are_accepted_and_the_rest_named() {
        assert_eq!(
            parse_unicast("02:11:22:aa:BB:ff"),
            Ok([0x02, 0x11, 0x22, 0xaa, 0xbb, 0xff])
        );
        for (text, expected) in [
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("00:00:00:00:00:00", "all-zeros"),
            ("02:11:22:33:44", "six hex octets"),
            ("02:11:22:33:44:55:66", "six hex octets"),
            ("02-11-22-33-44-55", "six hex octets"),
            ("02:11:22:33:44:5g", "six hex octets"),
            ("2:11:22:33:44:55", "six hex octets"),
            ("+2:11:22:33:44:55", "six hex octets"),
            ("", "six hex octets"),
        ] {
            let error = parse_unicast(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    fn ask(netconf: &str, cni_args: &str) -> Result<Option<RequestedAddresses>, CniError> {
        let netconf = NetConf::parse(netconf.as_bytes()).unwrap();
        let request = CniRequest::from_env(|key| {
            Some(
                match key {
                    "CNI_COMMAND" => "ADD",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/var/run/netns/x",
                    "CNI_IFNAME" => "eth0",
                    "CNI_ARGS" => cni_args,
                    _ => return None,
                }
                .to_owned(),
            )
        })
        .unwrap();
        addresses(&request, &netconf)
    }

    const PLAIN: &str = r#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni"}"#;

    #[test]
    fn requested_addresses_come_from_the_capability_then_args_then_cni_args() {
        let with_ips = |ips: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"wasmcni","runtimeConfig":{{"ips":{ips}}},"args":{{"cni":{{"ips":["10.0.0.9"]}}}}}}"#
            )
        };
        let got = ask(
            &with_ips(r#"["10.0.0.5/24","2001:db8::5/64"]"#),
            "IP=10.0.0.7",
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.source, "runtimeConfig.ips");
        assert_eq!(
            got.addresses,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert_eq!(got.of_family(false), Some("10.0.0.5".parse().unwrap()));
        // An empty capability is no request: the netconf's args come next.
        let got = ask(&with_ips("[]"), "IP=10.0.0.7").unwrap().unwrap();
        assert_eq!(got.source, "args.cni.ips");
        assert_eq!(got.addresses, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        // podman's --ip (and --ip6, comma-separated).
        let got = ask(PLAIN, "IgnoreUnknown=1;IP=10.98.0.200,fd00::c8")
            .unwrap()
            .unwrap();
        assert_eq!(got.source, "CNI_ARGS IP");
        assert_eq!(got.of_family(true), Some("fd00::c8".parse().unwrap()));
        assert_eq!(ask(PLAIN, "IP=").unwrap(), None);
        assert_eq!(ask(PLAIN, "IP= , ").unwrap(), None);
        // Empty entries (a trailing or doubled comma) are skipped, not refused.
        let got = ask(PLAIN, "IP=10.98.0.200,,").unwrap().unwrap();
        assert_eq!(
            got.addresses,
            vec!["10.98.0.200".parse::<IpAddr>().unwrap()]
        );
        assert!(ask(PLAIN, "IP=,10.0.0.300")
            .unwrap_err()
            .msg
            .contains("CNI_ARGS IP (entry 2)"));
        assert_eq!(ask(PLAIN, "").unwrap(), None);
    }

    #[test]
    fn malformed_requests_are_named_with_their_source() {
        for (netconf, args, expected) in [
            (
                PLAIN,
                "IP=10.0.0.300",
                "CNI_ARGS IP (entry 1): \"10.0.0.300\" is not an IP address",
            ),
            (
                PLAIN,
                "IP=10.0.0.5,10.0.0.6",
                "two IPv4 addresses (10.0.0.5 and 10.0.0.6)",
            ),
            (PLAIN, "IP=0.0.0.0", "unspecified"),
            (PLAIN, "IP=224.0.0.1", "multicast"),
            (PLAIN, "IP=255.255.255.255", "broadcast"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni","runtimeConfig":{"ips":"10.0.0.5"}}"#,
                "",
                "runtimeConfig.ips: \"10.0.0.5\" is not a list of addresses",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni","runtimeConfig":{"ips":["10.0.0.5",7]}}"#,
                "",
                "runtimeConfig.ips[1]: 7 is not an address",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"wasmcni","args":{"cni":{"ips":["10.0.0.5/33"]}}}"#,
                "",
                "args.cni.ips[0]: \"10.0.0.5/33\" is not an IP address",
            ),
        ] {
            let error = ask(netconf, args).unwrap_err();
            assert_eq!(error.code, crate::error::codes::INVALID_CONFIG, "{error:?}");
            assert!(error.msg.contains(expected), "{}: {}", expected, error.msg);
        }
    }
}
