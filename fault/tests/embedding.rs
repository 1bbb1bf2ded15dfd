//! A program embedding `fault::Mm` needs this crate alone: everything below comes from `fault`.
#![cfg(not(feature = "shuttle"))]

use fault::{Access, Errno, File, FramePool, MapFlags, Mm, MmConfig, PAGE_SIZE, Prot};
use std::sync::Arc;

#[test]
fn anonymous_and_file_mappings_with_fault_alone() {
    let frames = Arc::new(FramePool::new(Default::default()).unwrap());
    let mm = Mm::new(MmConfig::default(), frames.clone()).unwrap();
    let a = mm
        .mmap(
            0,
            2 * PAGE_SIZE,
            Prot::READ_WRITE,
            MapFlags::PRIVATE_ANONYMOUS,
            None,
        )
        .unwrap();
    mm.write(a, b"anonymous").unwrap();
    let file = File::new("/data", &frames, b"file contents");
    let f = mm
        .mmap(0, PAGE_SIZE, Prot::READ, MapFlags::PRIVATE, Some((&file, 0)))
        .unwrap();
    let mut buf = [0; 4];
    mm.read(f, &mut buf).unwrap();
    assert_eq!(&buf, b"file");
    assert_eq!(
        mm.fault(f, Access::Write).unwrap_err().to_string(),
        "segmentation fault: access not permitted"
    );
    assert_eq!(mm.munmap(a + 1, PAGE_SIZE).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(mm.maps().lines().count(), 2, "{}", mm.maps());
}
