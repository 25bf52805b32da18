//! Boxes whose values are made where they lie.
//!
//! `Box::new(value)` makes the value on the stack, then allocates and
//! copies every byte of it in. For a future that is its whole size, most
//! of it the states it is not in yet (a request's is 992 bytes), copied
//! to memory the allocator hands back cold: a VU's request is made about
//! once every VU's request, long after its cache lines were last touched.
//! Allocating first and making the value after lets the compiler make it
//! in the box, so only a future's captures are written (callgrind: the
//! two copies a request made, 200 instructions, went; docs/benchmarks.md).

/// `make()`'s value in a box, made in it rather than copied in.
#[inline(always)]
pub(crate) fn boxed<T>(make: impl FnOnce() -> T) -> Box<T> {
    Box::write(Box::new_uninit(), make())
}
