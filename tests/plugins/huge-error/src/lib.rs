//! An allocator that answers an 8 MiB error message: the daemon must bound what it keeps.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        Err("x".repeat(8 << 20))
    }
}
export!(Plugin);
