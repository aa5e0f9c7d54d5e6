//! The process's memory allocator: mimalloc for everyday blocks, the system allocator for
//! large ones.
//!
//! A request allocates and frees many small buffers across threads; glibc's arenas spent a
//! tenth of the server's CPU on that under load, mimalloc a fraction of it. But mimalloc keeps
//! freed memory for reuse and gives it back to the OS only when some thread gets round to it,
//! and Argon2id takes ~19 MiB per password hash: a burst of logins would leave that resident.
//! Blocks of [`LARGE_BLOCK`] or more therefore go to glibc, which (with the fixed mmap
//! threshold set by [`return_large_blocks_to_the_os`]) maps each one on its own and unmaps it
//! when freed.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks at least this big come from the system allocator.
pub const LARGE_BLOCK: usize = 1 << 20;

/// mimalloc below [`LARGE_BLOCK`], the system allocator from it on.
pub struct SplitAllocator;

fn is_large(layout: &Layout) -> bool {
    layout.size() >= LARGE_BLOCK
}

// SAFETY: every block is freed (or resized) by the allocator that made it: the choice depends
// only on the layout's size, which the caller passes unchanged to `dealloc` and `realloc`, and
// a resize that crosses the boundary moves the block to the other allocator.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe {
            if is_large(&layout) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if is_large(&layout) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this `layout`, so from the same allocator.
        unsafe {
            if is_large(&layout) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was_large = is_large(&layout);
        let will_be_large = new_size >= LARGE_BLOCK;
        // SAFETY: the caller's contract for `realloc` holds for the allocator that made `ptr`;
        // across the boundary the block is copied into a new one and the old one freed.
        unsafe {
            match (was_large, will_be_large) {
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                (true, true) => System.realloc(ptr, layout, new_size),
                _ => {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let new_ptr = self.alloc(new_layout);
                    if !new_ptr.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new_ptr
                }
            }
        }
    }
}

/// glibc raises its mmap threshold once a large mmapped block is freed, so later ones would come
/// from its arenas and stay resident. A fixed threshold keeps every large block mmapped, so it
/// goes back to the OS when freed. (SQLite's own allocations also use glibc.)
pub fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_bytes_when_resized_across_the_large_block_boundary() {
        // The test binary uses this allocator too (see main.rs), so Vec goes through it.
        let mut v: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        v.reserve_exact(LARGE_BLOCK * 2);
        assert!(v.capacity() >= LARGE_BLOCK);
        assert!(v.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        v.truncate(10);
        v.shrink_to_fit();
        assert!(v.capacity() < LARGE_BLOCK);
        assert!(v.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn a_freed_large_block_leaves_the_resident_set() {
        fn rss_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        }
        return_large_blocks_to_the_os();
        let before = rss_kib();
        // 64 MiB, every page touched: resident while alive.
        let block = vec![1u8; 64 << 20];
        assert!(rss_kib() >= before + 60 * 1024);
        drop(std::hint::black_box(block));
        let after = rss_kib();
        assert!(
            after < before + 16 * 1024,
            "RSS {before} KiB -> {after} KiB after freeing 64 MiB"
        );
    }
}
