//! Memory the kernel backs at once, where that saves a page fault per page.

/// Back `v`'s spare capacity with memory now, in one `madvise(MADV_POPULATE_WRITE)` call
/// (Linux 5.14 and later; elsewhere nothing happens), instead of one page fault per 4 KiB page
/// as items are first written. For [`Pool::map`](crate::Pool::map)'s results: 100,000 items
/// are 400 pages, and on a virtual machine a fault costs microseconds (the bench's serial map
/// of 100,000 tiny items spent a fifth of its time in them). Small buffers are left alone.
pub(crate) fn populate<T>(v: &mut Vec<T>) {
    let spare = v.spare_capacity_mut();
    let bytes = std::mem::size_of_val(spare);
    if bytes < 256 * 1024 {
        return;
    }
    let page = rustix::param::page_size();
    let start = (spare.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (spare.as_mut_ptr() as usize + bytes) / page * page;
    if end <= start {
        return;
    }
    #[expect(
        unsafe_code,
        reason = "madvise is unsafe in general (some advice discards memory); \
                  MADV_POPULATE_WRITE only faults in pages of this Vec's own allocation, \
                  writing nothing: their content, uninitialized spare capacity, is unchanged"
    )]
    // SAFETY: `start..end` lies inside the allocation of `v` (page-aligned inward), which we
    // hold mutably; MADV_POPULATE_WRITE neither frees nor changes memory.
    unsafe {
        let _ = rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            end - start,
            rustix::mm::Advice::LinuxPopulateWrite,
        );
    }
}
