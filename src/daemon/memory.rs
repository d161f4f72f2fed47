//! Returns the heap's free pages to the system after onboarding and then once a minute.
//!
//! glibc keeps freed memory inside its heaps for later allocations, and gives back only
//! a free stretch at the very top of a heap. The daemon's heap peaks at start-up, when
//! onboarding probes 64 addresses at once while the first polls begin, and then settles
//! much lower, but the freed pages stay scattered between live ones. Without a trim the
//! resident size stays near that peak: at 1,000 thermostats, one `malloc_trim` call cut
//! it from 18.7 to 13.7 MiB (docs/BENCHMARKS.md). At that size a trim took 0.74 to
//! 0.90 ms on the benchmark machine, so it runs on the executor like a short poll step.
//!
//! Other C libraries (musl) have no such call; there the task only waits for shutdown.

use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// Time between two trims.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// Trims the heap every `interval` until shutdown.
pub async fn trim_periodically(shutdown: Shutdown, interval: Duration) {
    while shutdown.sleep(interval).await {
        let started = Instant::now();
        let released = release_free_memory();
        log::debug!(
            "heap trim took {} µs and {}",
            started.elapsed().as_micros(),
            if released {
                "returned free pages to the system"
            } else {
                "found no free pages to return"
            }
        );
    }
}

/// Gives every whole free page in glibc's heaps back to the system. Returns whether
/// any memory was released; always `false` where the C library has no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own free lists, under
    // each arena's lock, so any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Gives every whole free page in glibc's heaps back to the system. Returns whether
/// any memory was released; always `false` where the C library has no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Returns the resident size of this process, from `/proc/self/statm`, in bytes.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|field| field.parse().ok())
            .expect("a resident page count in /proc/self/statm");
        pages * 4096
    }

    #[test]
    fn trim_returns_pages_freed_between_live_blocks() {
        // 32 MiB in small blocks, every 64th kept alive, so that the freed memory lies
        // between live blocks where glibc does not return it on its own.
        let mut blocks: Vec<Vec<u8>> = (0..131_072).map(|i| vec![i as u8; 256]).collect();
        let mut index = 0;
        blocks.retain(|_| {
            index += 1;
            index % 64 == 0
        });
        blocks.shrink_to_fit();

        let before = resident_bytes();
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = resident_bytes();

        let released = before.saturating_sub(after);
        assert!(
            released > 16 << 20,
            "the trim released {released} bytes (resident {before} before, {after} after); \
             expected more than 16 MiB of the 31.5 MiB freed"
        );
        assert_eq!(blocks.len(), 2048);
    }
}
