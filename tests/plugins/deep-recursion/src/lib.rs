//! An allocator that recurses without end: must overflow its bounded stack.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
// Recursing without end is the point of this plugin.
#[allow(unconditional_recursion)]
fn descend(depth: u64) -> u64 {
    core::hint::black_box(descend(core::hint::black_box(depth + 1)) + 1)
}
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        Ok(descend(0) as u32)
    }
}
export!(Plugin);
