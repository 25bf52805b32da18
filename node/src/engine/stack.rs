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
//! of a scenario run on its fiber ([`FIBER_STACK`]), and wasmtime keeps
//! the scenario's own frames within [`MAX_WASM_STACK`] (both set on the
//! engine by `ScenarioModule::compile`), so the stack pointer of a host
//! call is always far more than [`DEPTH`] above the stack's end.

/// The size of a VU's fiber stack (wasmtime's default, set explicitly).
pub const FIBER_STACK: usize = 2 << 20;

/// The most a scenario's own frames may take of it (wasmtime's default,
/// set explicitly): the rest, 1.5 MiB, is the host calls' and this
/// module's margin.
pub const MAX_WASM_STACK: usize = 512 << 10;

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
/// pointer is on, [`DEPTH`] bytes of them, and says which; `None` when the
/// current page has too little room left below the stack pointer (the
/// call then gives back nothing). Call it only from a host call of a
/// scenario (on its fiber; see the module docs).
#[inline(never)]
pub fn release_below() -> Option<std::ops::Range<usize>> {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    let range = below(sp)?;
    // SAFETY: the range lies below the stack pointer, so nothing in it is
    // live, and within this fiber's stack mapping (module docs); the
    // frames of this call stay above it (MARGIN). MADV_DONTNEED on private
    // anonymous memory only drops pages, which read as zeros after.
    let _ = unsafe {
        libc::madvise(
            range.start as *mut libc::c_void,
            range.len(),
            libc::MADV_DONTNEED,
        )
    };
    Some(range)
}

/// The pages [`release_below`] gives back for a stack pointer at `sp`.
fn below(sp: usize) -> Option<std::ops::Range<usize>> {
    let floor = sp & !(PAGE - 1);
    if sp - floor < MARGIN || floor < DEPTH {
        return None;
    }
    Some(floor - DEPTH..floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_given_back_are_whole_and_below_the_current_one_with_room_left() {
        let page = 0x7f00_0000_0000;
        assert_eq!(below(page + 2048), Some(page - DEPTH..page));
        assert_eq!(below(page + MARGIN), Some(page - DEPTH..page));
        assert_eq!(
            below(page + MARGIN - 1),
            None,
            "too little room for the call"
        );
        assert_eq!(below(page), None);
        assert_eq!(below(DEPTH - 1 + MARGIN), None, "nothing below address 0");
    }

    /// Touches `n` KiB of stack below the caller.
    #[inline(never)]
    fn touch(n: usize) -> u8 {
        let mut buf = [0u8; 1024];
        buf[n % 1024] = 1;
        let buf = std::hint::black_box(buf);
        if n == 0 {
            buf[0]
        } else {
            touch(n - 1).wrapping_add(buf[1])
        }
    }

    /// Resident pages of `range`, by `mincore`.
    fn resident(range: &std::ops::Range<usize>) -> usize {
        let mut vec = vec![0u8; range.len() / PAGE];
        // SAFETY: `vec` has a byte per page of the range, which is mapped
        // (this thread's stack).
        let rc = unsafe {
            libc::mincore(
                range.start as *mut libc::c_void,
                range.len(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    /// Releases from `pad` bytes deeper than the caller, so that one of a
    /// few tries finds room left in its page.
    #[inline(never)]
    fn release_at(pad: usize) -> Option<std::ops::Range<usize>> {
        let mut buf = [0u8; 4096];
        std::hint::black_box(&mut buf[..pad.min(4096)]);
        release_below()
    }

    #[test]
    fn a_stack_gives_back_the_pages_below_and_goes_on_over_them() {
        let done = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                for pad in [0, 1024, 2048, 3072] {
                    let before = touch(24);
                    let Some(range) = release_at(pad) else {
                        continue;
                    };
                    assert_eq!(resident(&range), 0, "every page below is given back");
                    // The stack goes on over them as before.
                    assert_eq!(touch(24), before);
                    return true;
                }
                false
            })
            .expect("a thread")
            .join()
            .expect("no panic");
        assert!(done, "one of the tries had room left in its page");
    }
}
