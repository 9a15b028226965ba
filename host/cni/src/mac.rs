//! MAC addresses a runtime may ask for (the `mac` capability, `CNI_ARGS` `MAC=`): six hex
//! octets, unicast, not all zeros.

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
