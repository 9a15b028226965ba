//! An allocator that answers an address already held by a pod: the daemon must refuse it.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
use wasmcni::plugin::pool_view;
struct Plugin;
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        pool_view::in_use()
            .first()
            .copied()
            .ok_or_else(|| "nothing in use yet".to_string())
    }
}
export!(Plugin);
