//! A sleeping VU gives back the deep pages of its fiber stack.
//!
//! A VU's calls into its scenario run on a fiber stack of their own
//! (wasmtime's async support), and a stack keeps, resident, every page it
//! ever touched. A VU that only sleeps uses less than one page, but a
//! request goes deeper on its way through the host (its recording,
//! hdrhistogram's record among it, takes the stack past 5 KiB), and the
//! page it touched there stays, 4 KiB a VU, for as long as the VU lives.
//! Most of a sleeping VU's life is the sleep, so a VU about to sleep at
//! least [`RELEASE_SLEEP_MS`] tells the kernel it no longer needs the pages
//! of its stack below the one it is on (`MADV_DONTNEED`: the next
//! request finds them zeroed, one page fault each). A VU that sleeps
//! often and briefly keeps them: the fault would cost more than the page.
//!
//! Why this is sound: nothing below the stack pointer is live, and the
//! pages released are entirely below the page that holds it, with at
//! least [`MARGIN`] bytes left in that page for the frames of the call
//! that releases them. They are within the fiber's stack: the host calls
//! of a scenario run on its fiber (2 MiB), and wasmtime keeps the
//! scenario's own frames within its 512 KiB `max_wasm_stack`, so the stack
//! pointer of a host call is always far more than [`DEPTH`] above the
//! stack's end.

/// A sleep at least this long, in milliseconds, gives back the stack's
/// deeper pages.
pub const RELEASE_SLEEP_MS: i64 = 100;

/// How much of the stack below the current page is given back.
const DEPTH: usize = 16 << 10;

/// The room the call that gives pages back needs in the current page.
const MARGIN: usize = 1024;

/// The pages of the memory: 4 KiB on the machines fusi runs on; a
/// larger one only makes the release coarser.
const PAGE: usize = 4 << 10;

/// Gives back the pages of the calling stack below the one its stack
/// pointer is on, [`DEPTH`] bytes of them. Call it only from a host call
/// of a scenario (on its fiber; see the module docs).
#[inline(never)]
pub fn release_below() {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    let floor = sp & !(PAGE - 1);
    if sp - floor < MARGIN || floor < DEPTH {
        return;
    }
    let start = floor - DEPTH;
    // SAFETY: [start, floor) lies below the stack pointer, so nothing in it
    // is live, and within this fiber's stack mapping (module docs); the
    // frames of this call stay above `floor` (MARGIN). MADV_DONTNEED on
    // private anonymous memory only drops pages, which read as zeros after.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, DEPTH, libc::MADV_DONTNEED) };
}
