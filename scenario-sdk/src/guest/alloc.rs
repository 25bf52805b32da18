//! The scenario's global allocator: [`crate::heap`] for small blocks, the
//! system allocator (wasi-libc's dlmalloc) for large or over-aligned ones.
//!
//! On by default (feature `allocator`); a scenario that brings its own
//! `#[global_allocator]` turns the feature off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

use crate::heap::{ALIGN, Heap, MAX_SMALL, PAGE, Pages};

#[cfg(target_feature = "atomics")]
compile_error!(
    "fusi-sdk's allocator is for single-threaded wasm; build without the atomics feature, or \
     turn off fusi-sdk's `allocator` feature"
);

/// Pages from `memory.grow` on memory 0.
struct Grow;

impl Pages for Grow {
    fn grow(&mut self, pages: usize) -> Option<usize> {
        let old = core::arch::wasm32::memory_grow(0, pages);
        (old != usize::MAX).then(|| old * PAGE)
    }
}

/// The heap, in a cell: a scenario runs on one thread.
struct Allocator(UnsafeCell<Heap<Grow>>);

// SAFETY: wasm32-wasip1 without the atomics feature (checked above) has
// one thread, so the heap is never used from two at once.
unsafe impl Sync for Allocator {}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator(UnsafeCell::new(Heap::new(Grow)));

/// Whether `layout` is a small block of the heap's.
fn small(layout: Layout) -> bool {
    layout.size() <= MAX_SMALL && layout.align() <= ALIGN
}

// SAFETY: small blocks come from the heap and go back to it with the same
// layout (GlobalAlloc's contract), the rest from and to `System`; one
// thread, and no allocation while the heap is borrowed.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if small(layout) {
            // SAFETY: one thread, and the borrow ends here.
            unsafe { (*self.0.get()).alloc(layout.size()) }
        } else {
            // SAFETY: passed on with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: the block is at least `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if small(layout) {
            // SAFETY: a small block of this heap, given back with its size.
            unsafe { (*self.0.get()).free(ptr, layout.size()) }
        } else {
            // SAFETY: `System` gave it.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if small(layout) && Heap::<Grow>::same_class(layout.size(), new_size) {
            return ptr;
        }
        // SAFETY: the new layout's size is valid (the caller's contract).
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !small(layout) && !small(new) {
            // SAFETY: `System` gave it, with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a new block, the old one's bytes copied, the old one freed.
        unsafe {
            let moved = self.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}
