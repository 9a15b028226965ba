//! An allocator that answers an address outside every pool block: the daemon must refuse it.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        Ok(0x0808_0808) // 8.8.8.8
    }
}
export!(Plugin);
