//! An allocator that allocates until memory runs out: must hit the memory cap.
wit_bindgen::generate!({ path: "../../../wit", world: "allocator" });
struct Plugin;
impl Guest for Plugin {
    fn allocate(_pod: Pod) -> Result<u32, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}
export!(Plugin);
