//! An allocator that never returns: must run out of fuel.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        let mut n: u32 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
}
export!(Plugin);
