//! One CNI invocation as the runtime makes it: the `CNI_*` environment and the network
//! configuration on stdin, decoded as the shim and the daemon decode them (the request, the
//! configuration with its `prevResult`, `runtimeConfig`, GC lists and route keys, and the
//! requested address and MAC an ADD would act on).
//!
//! Input: `KEY=VALUE` lines of the environment, an empty line, then stdin (see
//! [`common::invocation`]), so a crash file reads as the invocation it is.
//!
//! Beyond "never panics": a request `from_env` accepts passes the daemon's `validate`; a
//! parsed `prevResult` renders and parses back as itself in its version; a requested address
//! list has at most one address per family; a requested MAC is unicast and not zero; every
//! error prints as a CNI error object that reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmcni_cni::{requested, CniRequest, CniResult, NetConf};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = common::invocation(data);
    let _ = wasmcni_cni::peek_version(stdin);
    let request = match CniRequest::from_env(|key| env.get(key).cloned()) {
        Ok(request) => {
            if let Err(e) = request.validate() {
                panic!("from_env accepted what validate refuses: {request:?}: {e:?}");
            }
            Some(request)
        }
        Err(e) => {
            common::check_error(&e);
            None
        }
    };
    let netconf = match NetConf::parse(stdin) {
        Ok(netconf) => netconf,
        Err(e) => {
            common::check_error(&e);
            return;
        }
    };
    if let Some(prev) = &netconf.prev_result {
        let version = netconf.cni_version;
        let rendered = prev.to_json(version);
        let back = CniResult::parse(&rendered, version).unwrap_or_else(|e| {
            panic!("{version}: prevResult renders as unreadable {rendered}: {e:?}")
        });
        assert_eq!(
            &back, prev,
            "{version}: prevResult does not survive rendering"
        );
    }
    let Some(request) = request else { return };
    if let Err(e) = request.command.check_version(netconf.cni_version) {
        common::check_error(&e);
    }
    match requested::addresses(&request, &netconf) {
        Ok(Some(asked)) => {
            let v6 = asked.addresses.iter().filter(|a| a.is_ipv6()).count();
            assert!(v6 <= 1 && asked.addresses.len() - v6 <= 1, "{asked:?}");
            assert!(
                !asked.addresses.is_empty(),
                "an empty request is none: {asked:?}"
            );
        }
        Ok(None) => {}
        Err(e) => common::check_error(&e),
    }
    match requested::mac(&request, &netconf) {
        Ok(Some(mac)) => assert!(mac[0] & 1 == 0 && mac != [0; 6], "{mac:02x?}"),
        Ok(None) => {}
        Err(e) => common::check_error(&e),
    }
});
