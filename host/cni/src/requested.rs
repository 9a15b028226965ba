//! What a runtime may ask of the pod interface beyond the spec's fields: a MAC (the `mac`
//! capability, `CNI_ARGS` `MAC=`: six hex octets, unicast, not all zeros) and addresses (the
//! `ips` capability, `args.cni.ips`, `CNI_ARGS` `IP=`), which are refused until served.

use serde_json::Value;

use crate::error::CniError;
use crate::netconf::NetConf;
use crate::request::CniRequest;

/// Refuses an ADD that asks for particular addresses (the `ips` capability, `CNI_ARGS` `IP=`,
/// podman's `--ip`, the netconf's `args.cni.ips`): wasmcni does not serve them yet, and a pod
/// must never get another address than it asked for without a word. Empty requests are none.
pub fn refuse_addresses(request: &CniRequest, netconf: &NetConf) -> Result<(), CniError> {
    let listed = |value: &Value| value.as_array().is_none_or(|ips| !ips.is_empty());
    let in_netconf = netconf
        .raw
        .get("args")
        .and_then(|args| args.get("cni"))
        .and_then(|cni| cni.get("ips"))
        .filter(|ips| !ips.is_null());
    let requested = if let Some(ips) = netconf
        .runtime_config
        .capability("ips")
        .filter(|v| listed(v))
    {
        ("runtimeConfig.ips", crate::text::excerpt(ips))
    } else if let Some(ips) = in_netconf.filter(|v| listed(v)) {
        ("args.cni.ips", crate::text::excerpt(ips))
    } else if let Some(ip) = request.arg("IP").filter(|ip| !ip.is_empty()) {
        ("CNI_ARGS IP", crate::text::excerpt(&ip.into()))
    } else {
        return Ok(());
    };
    Err(CniError::unsupported_field(requested.0, &requested.1).with_details(
        "wasmcni does not serve requested addresses yet: the pool chooses every pod's address; remove the request (podman: --ip) or use another network for this container",
    ))
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
}
