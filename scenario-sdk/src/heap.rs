//! The guest's heap: blocks in size classes, cut from the bottom of pages
//! taken as they are needed, with no headers and no footer.
//!
//! Why a heap of its own: the memory pages a VU's guest has touched stay
//! resident while the VU sleeps, so every page counts, thousands of times.
//! wasi-libc's dlmalloc (what Rust's `System` allocator is on
//! `wasm32-wasip1`) takes the space between the module's data and the end
//! of its initial memory as its first segment and writes a fence at the
//! segment's end when it starts: for the hello scenario that is one page
//! holding one byte, 4 KiB of every VU (seen in `/proc/self/pagemap`;
//! docs/benchmarks.md, "The guest's heap"). This heap takes whole wasm
//! pages (64 KiB) as it needs them and hands out blocks from the bottom
//! up, so the pages a VU touches are the ones its data fills.
//!
//! A block's size is its class: multiples of 16 bytes up to 128, then four
//! classes between each power of two and the next, up to [`MAX_SMALL`]
//! (at most a quarter wasted). A freed block goes on its class's list (the
//! link kept in the block) and is the next of its class handed out.
//! Nothing coalesces, which suits a VU: each iteration frees what it
//! allocated and allocates the same again. What is larger, or aligned to
//! more than [`ALIGN`], is not this heap's: the caller gives it to the
//! system allocator, which does coalesce.

/// The alignment of every block.
pub const ALIGN: usize = 16;

/// The largest block this heap hands out.
pub const MAX_SMALL: usize = 32 << 10;

/// A wasm page: what memory grows by.
pub const PAGE: usize = 64 << 10;

/// Classes of 16 to 128 bytes, then four a power of two to 32 KiB.
const CLASSES: usize = 8 + 4 * 8;

/// The class of a block of `size` bytes, and the class's block size.
/// `size` is at most [`MAX_SMALL`].
#[inline]
pub fn class_of(size: usize) -> (usize, usize) {
    if size <= 128 {
        let i = size.saturating_sub(1) / 16;
        return (i, (i + 1) * 16);
    }
    let s = size - 1;
    let k = usize::BITS - 1 - s.leading_zeros();
    let step = 1usize << (k - 2);
    let sub = (s >> (k - 2)) - 4;
    let index = 8 + (k as usize - 7) * 4 + sub;
    (index, (1usize << k) + (sub + 1) * step)
}

/// Where a heap gets its pages: `grow(n)` adds `n` wasm pages and returns
/// the address of the first, or `None` when memory may not grow.
pub trait Pages {
    /// Adds `pages` pages of zeroed memory.
    fn grow(&mut self, pages: usize) -> Option<usize>;
}

/// Free lists by class and the unused rest of the last pages taken.
pub struct Heap<P> {
    pages: P,
    /// The first block of each class's free list; 0 for none.
    free: [usize; CLASSES],
    /// The bottom of the space not yet handed out.
    next: usize,
    /// The end of that space.
    end: usize,
}

impl<P: Pages> Heap<P> {
    /// An empty heap that takes its pages from `pages`.
    pub const fn new(pages: P) -> Heap<P> {
        Heap {
            pages,
            free: [0; CLASSES],
            next: 0,
            end: 0,
        }
    }

    /// A block of at least `size` bytes (at most [`MAX_SMALL`]), aligned to
    /// [`ALIGN`]; null when memory may not grow.
    ///
    /// # Safety
    ///
    /// Every block on a free list must be one this heap handed out and that
    /// was given back with [`Heap::free`], untouched since.
    #[inline]
    pub unsafe fn alloc(&mut self, size: usize) -> *mut u8 {
        let (class, block) = class_of(size);
        let head = self.free[class];
        if head != 0 {
            // SAFETY: a free block holds the address of the next one in its
            // first word (written by `free`, and the block is ours).
            self.free[class] = unsafe { (head as *const usize).read() };
            return head as *mut u8;
        }
        if self.end - self.next < block {
            let pages = block.div_ceil(PAGE);
            let Some(base) = self.pages.grow(pages) else {
                return std::ptr::null_mut();
            };
            if base != self.end {
                // Not next to what is left (someone else grew memory): what
                // is left, less than this block, stays unused.
                self.next = base;
            }
            self.end = base + pages * PAGE;
        }
        let at = self.next;
        self.next += block;
        at as *mut u8
    }

    /// Gives back a block.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`Heap::alloc`] of this heap with a `size` of the
    /// same class, and is not used again until handed out again.
    #[inline]
    pub unsafe fn free(&mut self, ptr: *mut u8, size: usize) {
        let (class, _) = class_of(size);
        // SAFETY: the block is at least 16 bytes, aligned, and ours again.
        unsafe { (ptr as *mut usize).write(self.free[class]) };
        self.free[class] = ptr as usize;
    }

    /// Whether a block of `old` bytes also serves `new` bytes in place.
    #[inline]
    pub fn same_class(old: usize, new: usize) -> bool {
        new <= MAX_SMALL && class_of(old).1 == class_of(new).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages from a buffer, as memory.grow would give them: contiguous,
    /// zeroed, until the buffer ends.
    struct Buffer {
        memory: Vec<u8>,
        used: usize,
        grown: usize,
    }

    impl Buffer {
        fn new(pages: usize) -> Buffer {
            // One page more, to align the first to 16 bytes.
            Buffer {
                memory: vec![0; (pages + 1) * PAGE],
                used: 0,
                grown: 0,
            }
        }

        fn base(&self) -> usize {
            (self.memory.as_ptr() as usize).next_multiple_of(ALIGN)
        }
    }

    impl Pages for Buffer {
        fn grow(&mut self, pages: usize) -> Option<usize> {
            if (self.used + pages) * PAGE + ALIGN > self.memory.len() {
                return None;
            }
            let at = self.base() + self.used * PAGE;
            self.used += pages;
            self.grown += 1;
            Some(at)
        }
    }

    #[test]
    fn classes_cover_every_size_with_at_most_a_quarter_wasted() {
        let mut last = class_of(1);
        assert_eq!(last, (0, 16));
        for size in 1..=MAX_SMALL {
            let (index, block) = class_of(size);
            assert!(index < CLASSES, "{size}");
            assert!(block >= size && block % ALIGN == 0, "{size} -> {block}");
            assert!(
                size <= 16 || block * 4 <= size.saturating_sub(1) * 5 + 64,
                "{size} -> {block}"
            );
            assert!(
                index >= last.0 && block >= last.1,
                "classes grow with sizes"
            );
            if index == last.0 {
                assert_eq!(block, last.1, "one size a class");
            }
            last = (index, block);
        }
        assert_eq!(class_of(MAX_SMALL), (CLASSES - 1, MAX_SMALL));
        assert_eq!(class_of(129), (8, 160));
        assert_eq!(class_of(2048), (8 + 4 * 4 - 1, 2048));
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused_last_freed_first() {
        let mut heap = Heap::new(Buffer::new(4));
        let sizes = [1, 16, 17, 100, 129, 2048, 3000, 64, 5];
        // SAFETY: blocks are used only while handed out, as `free` asks.
        let blocks: Vec<(usize, usize)> = sizes
            .iter()
            .map(|&size| (unsafe { heap.alloc(size) } as usize, size))
            .collect();
        for (i, &(at, size)) in blocks.iter().enumerate() {
            assert_ne!(at, 0);
            assert_eq!(at % ALIGN, 0);
            for &(other, other_size) in &blocks[i + 1..] {
                assert!(at + size <= other || other + other_size <= at, "overlap");
            }
            // SAFETY: the block is handed out and `size` bytes long.
            unsafe { std::ptr::write_bytes(at as *mut u8, 0xAB, size) };
        }
        // The first blocks are cut from the bottom of the first page.
        assert_eq!(blocks[0].0, heap.pages.base());
        assert_eq!(blocks[1].0, heap.pages.base() + 16);
        let (a, b) = (blocks[3], blocks[7]); // 100 and 64 bytes: 112 and 64
        // SAFETY: given back once, with their sizes.
        unsafe {
            heap.free(a.0 as *mut u8, a.1);
            heap.free(b.0 as *mut u8, b.1);
        }
        // SAFETY: as above.
        unsafe {
            assert_eq!(heap.alloc(97) as usize, a.0, "same class, reused");
            assert_eq!(heap.alloc(49) as usize, b.0);
        }
        let top = heap.next;
        // SAFETY: as above.
        let fresh = unsafe { heap.alloc(100) } as usize;
        assert_eq!(fresh, top, "an empty list cuts a new block");
    }

    #[test]
    fn a_steady_loop_touches_no_more_memory_and_growth_stops_cleanly() {
        let mut heap = Heap::new(Buffer::new(2));
        let round = |heap: &mut Heap<Buffer>| {
            // SAFETY: each block is freed once, with its size.
            unsafe {
                let a = heap.alloc(2048);
                let b = heap.alloc(90);
                let c = heap.alloc(300);
                heap.free(b, 90);
                let d = heap.alloc(1000);
                heap.free(a, 2048);
                heap.free(c, 300);
                heap.free(d, 1000);
            }
        };
        round(&mut heap);
        let high = heap.next;
        for _ in 0..1000 {
            round(&mut heap);
        }
        assert_eq!(heap.next, high, "a repeated iteration reuses its blocks");
        assert_eq!(heap.pages.grown, 1);
        // Fill both pages, then fail without growing past them.
        let mut got = 0;
        // SAFETY: blocks are never used.
        while !unsafe { heap.alloc(MAX_SMALL) }.is_null() {
            got += 1;
            assert!(got <= 4, "more than two pages handed out");
        }
        assert!(heap.next <= heap.end);
        assert_eq!(heap.pages.used, 2);
    }

    #[test]
    fn same_class_keeps_a_block_in_place() {
        assert!(Heap::<Buffer>::same_class(100, 112));
        assert!(!Heap::<Buffer>::same_class(100, 113));
        assert!(!Heap::<Buffer>::same_class(MAX_SMALL, MAX_SMALL + 1));
    }
}
