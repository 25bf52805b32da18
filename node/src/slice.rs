//! A short CPU slice for a mesh node's threads, so that nodes sharing a
//! host start a run together.
//!
//! Linux's scheduler (EEVDF, 6.6 and later) lets a running thread keep its
//! core for a slice: 0.75 ms × (1 + log2 CPUs) by default, 1.4 ms on 2
//! cores. A thread that wakes while every core is busy waits for a slice
//! to end. Ten nodes of a testnet on 2 cores all wake at a run's start
//! instant: the first two begin their load at once, and the others waited
//! 1.2-2.4 ms for a core, which is the start skew the mesh bench measured
//! (docs/benchmarks.md, "on one machine the start skew is the wake-up's
//! lateness"). A thread with a shorter slice of its own (a custom slice,
//! Linux 6.12) gets an earlier deadline and takes its core when it wakes.
//!
//! So `fusi-node up` asks for 100 µs, the shortest Linux allows, before it
//! starts any thread (threads inherit it). It is not a priority: every
//! thread of every process shares the cores as before, in finer turns.
//! Alone on its cores, a node is never made to wait, and the slice changes
//! nothing there (`bench throughput` and `bench rate` saw no difference).
//! `--cpu-slice 0` keeps the kernel's own.

use std::io;

/// The shortest and longest custom slices Linux accepts, in µs.
pub const SLICE_US: std::ops::RangeInclusive<u32> = 100..=100_000;

/// What asking for a slice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// The calling thread, and the threads it starts, run in slices of
    /// this many µs.
    Set(u32),
    /// The kernel took the call but keeps its own slice (Linux before
    /// 6.12, or a scheduler without custom slices).
    Unsupported,
    /// The thread runs under a policy other than the normal one (a
    /// real-time or deadline policy someone gave it): left as it is.
    OtherPolicy(u32),
}

/// Asks for slices of `us` µs (within [`SLICE_US`]) for the calling thread
/// and every thread it starts from now on.
///
/// # Errors
///
/// The kernel refused the call (no `sched_setattr`, or not permitted).
#[cfg(target_os = "linux")]
pub fn shorten(us: u32) -> io::Result<Slice> {
    let mut attr = linux::get()?;
    if attr.policy != linux::SCHED_OTHER && attr.policy != linux::SCHED_BATCH {
        return Ok(Slice::OtherPolicy(attr.policy));
    }
    let wanted = u64::from(us.clamp(*SLICE_US.start(), *SLICE_US.end())) * 1_000;
    attr.runtime = wanted;
    attr.deadline = 0;
    attr.period = 0;
    attr.flags = 0;
    linux::set(&attr)?;
    // A kernel without custom slices takes the call and ignores it; one
    // with them says the slice back.
    let now = linux::get()?;
    Ok(if now.runtime == wanted {
        Slice::Set(u32::try_from(wanted / 1_000).unwrap_or(u32::MAX))
    } else {
        Slice::Unsupported
    })
}

/// Elsewhere there is no custom slice to ask for.
#[cfg(not(target_os = "linux"))]
pub fn shorten(_us: u32) -> io::Result<Slice> {
    Ok(Slice::Unsupported)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    pub const SCHED_OTHER: u32 = 0;
    pub const SCHED_BATCH: u32 = 3;

    /// `struct sched_attr` as of its first version (48 bytes), which every
    /// kernel with `sched_setattr` accepts; `runtime` is a normal thread's
    /// custom slice in ns (Linux 6.12).
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct SchedAttr {
        pub size: u32,
        pub policy: u32,
        pub flags: u64,
        pub nice: i32,
        pub priority: u32,
        pub runtime: u64,
        pub deadline: u64,
        pub period: u64,
    }

    const SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

    /// The calling thread's attributes.
    pub fn get() -> io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        // SAFETY: the kernel writes at most `SIZE` bytes into `attr`, a
        // live `SchedAttr` of that size; tid 0 is the calling thread.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                SIZE,
                0,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr)
    }

    /// Sets the calling thread's attributes.
    pub fn set(attr: &SchedAttr) -> io::Result<()> {
        let attr = SchedAttr {
            size: SIZE,
            ..*attr
        };
        // SAFETY: the kernel reads `attr.size` bytes of `attr`, a live
        // `SchedAttr` of that size; tid 0 is the calling thread.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice a thread's scheduler entity has, from `/proc`.
    fn proc_slice_ns() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn a_slice_asked_for_is_the_threads_and_its_new_threads_or_said_unsupported() {
        // On a thread of its own: the slice stays with the thread that asked.
        std::thread::spawn(|| {
            let before = proc_slice_ns();
            match shorten(250).expect("sched_setattr") {
                Slice::Set(us) => {
                    assert_eq!(us, 250);
                    if before.is_some() {
                        assert_eq!(proc_slice_ns(), Some(250_000));
                    }
                    let child = std::thread::spawn(proc_slice_ns).join().expect("child");
                    if before.is_some() {
                        assert_eq!(child, Some(250_000), "a new thread inherits it");
                    }
                    // Out of range asks are brought within it.
                    assert_eq!(shorten(1).expect("sched_setattr"), Slice::Set(100));
                }
                Slice::Unsupported => {
                    assert_eq!(proc_slice_ns(), before, "nothing changed");
                }
                Slice::OtherPolicy(policy) => panic!("the test runs under policy {policy}"),
            }
        })
        .join()
        .expect("the test thread");
    }
}
