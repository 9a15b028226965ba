//! What the daemon reads from its socket (and the spool of pending DELs): a length-prefixed
//! frame of a `DaemonRequest`, then the request's own checks and its configuration; and what
//! the shim reads back, a `DaemonResponse`.
//!
//! Beyond "never panics": the frame limit holds whatever the length prefix claims; a decoded
//! message encodes and decodes back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmcni_cni::proto::{
    encode_frame, read_frame, DaemonRequest, DaemonResponse, MAX_FRAME_BYTES,
};
use wasmcni_cni::NetConf;

#[path = "common.rs"]
mod common;

fn round_trips<T>(message: &T)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(message).expect("a decoded message encodes");
    let back: T = read_frame(&mut frame.as_slice(), usize::MAX).expect("and decodes again");
    assert_eq!(&back, message);
}

fuzz_target!(|data: &[u8]| {
    // A small limit as well as the real one, so the limit check itself is exercised.
    for limit in [64, MAX_FRAME_BYTES] {
        let mut reader = data;
        if let Ok(request) = read_frame::<DaemonRequest>(&mut reader, limit) {
            assert!(
                data.len() - reader.len() <= limit + 4,
                "read past the limit"
            );
            round_trips(&request);
            if let Err(e) = request.request.validate() {
                common::check_error(&e);
            }
            if let Err(e) = NetConf::parse(request.config.as_bytes()) {
                common::check_error(&e);
            }
        }
        let mut reader = data;
        if let Ok(response) = read_frame::<DaemonResponse>(&mut reader, limit) {
            round_trips(&response);
        }
    }
});
