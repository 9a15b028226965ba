//! A busybox root filesystem for containers started with `--rootfs` (no image, no registry).

use std::path::{Path, PathBuf};

/// `parent/rootfs`: Debian's `busybox-static` with every applet linked into /bin, and an empty
/// /www; built once per parent directory.
pub fn busybox(parent: &Path) -> PathBuf {
    let rootfs = parent.join("rootfs");
    if rootfs.join("bin/sh").exists() {
        return rootfs;
    }
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::create_dir_all(rootfs.join("www")).expect("rootfs www");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy /bin/busybox: {e} (apt-get install busybox-static)"));
    let rootfs_text = rootfs.display().to_string();
    crate::netns::run(
        "chroot",
        &[&rootfs_text, "/bin/busybox", "--install", "-s", "/bin"],
    );
    rootfs
}
