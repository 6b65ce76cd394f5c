//! What every fuzz target shares: a counting global allocator and the memory rule.
//!
//! The rule (issue 5): while a parser handles `n` bytes of input, the heap it takes at
//! its peak must stay within `16 × n + 64 KiB`. [`check`] runs a call, measures the peak
//! of the bytes held during the call (above what was held before it) and panics when the
//! peak breaks the rule; libFuzzer then saves the input as a crash.
//!
//! The allocator counts the sizes the program asks for (`Layout::size`), not what the
//! system allocator rounds them to. A `realloc` is counted as a resize: the peak sees the
//! new size, not the old and the new block side by side (that copy is transient and the
//! system allocator often grows in place).
//!
//! Only this crate uses `unsafe` (the `GlobalAlloc` impl, forwarding to `System`);
//! the library itself forbids it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cookie of the handshake targets, and of the nodes the corpus was captured from,
/// so that captured handshakes pass the digest checks.
pub const COOKIE: &str = "autocluster-fuzz";

/// Bytes of peak allocation allowed per input byte.
pub const ALLOC_PER_INPUT_BYTE: usize = 16;
/// Bytes of peak allocation allowed on top of the per-byte allowance.
pub const ALLOC_SLACK: usize = 64 * 1024;

/// The most a call with `input_len` bytes of input may allocate at its peak.
pub fn limit(input_len: usize) -> usize {
    input_len
        .saturating_mul(ALLOC_PER_INPUT_BYTE)
        .saturating_add(ALLOC_SLACK)
}

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The global allocator of every fuzz target: `System`, counted.
pub struct Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and
// only adds bookkeeping on atomics, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes held on the heap now.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Runs `f`, a parser call on `input_len` bytes, and panics if the heap it took at its
/// peak (including what it returns) exceeds [`limit`]. Calls nest: an outer call sees
/// the peaks of the inner ones.
pub fn check<T>(what: &str, input_len: usize, f: impl FnOnce() -> T) -> T {
    let (out, peak) = measure(f);
    let allowed = limit(input_len);
    assert!(
        peak <= allowed,
        "{what}: peak allocation of {peak} bytes for {input_len} input bytes breaks the rule \
         16 × input + 64 KiB = {allowed} bytes"
    );
    out
}

/// Runs `f` and returns its result with the peak number of bytes it held at once.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let outer_peak = PEAK.load(Ordering::Relaxed);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed);
    PEAK.store(outer_peak.max(peak), Ordering::Relaxed);
    (out, peak.saturating_sub(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_are_measured_and_nest() {
        let (_, peak) = measure(|| {
            let a = vec![0u8; 100_000];
            drop(a);
            let (_, inner) = measure(|| vec![0u8; 10_000]);
            assert!((10_000..20_000).contains(&inner));
        });
        assert!((100_000..110_000).contains(&peak), "{peak}");
        check("small", 0, || vec![0u8; 1000]);
        assert!(std::panic::catch_unwind(|| check("big", 10, || vec![0u8; 70_000])).is_err());
    }
}
