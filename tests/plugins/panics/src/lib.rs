//! An allocator that panics: must trap, not take the daemon down.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
impl Guest for Plugin {
    fn allocate(pod: Pod) -> Result<u32, String> {
        panic!("allocator bug for {}", pod.container_id)
    }
}
export!(Plugin);
