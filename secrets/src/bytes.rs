//! `SecretBytes`: the only way secret contents travel through this crate.
//!
//! Each value lives in its own anonymous mapping that is
//! - excluded from core dumps (`madvise(MADV_DONTDUMP)`, `dd` in
//!   `/proc/<pid>/smaps`), whatever `fs.suid_dumpable` says;
//! - locked in RAM (`mlock`, `lo` in smaps), so it never reaches swap. When
//!   the memlock limit (`RLIMIT_MEMLOCK`) refuses, the value is kept
//!   unlocked and one warning is logged for the process;
//! - wiped before it is unmapped.
//!
//! A mapping takes whole pages (4 KiB for a 20-byte password); values are
//! shared by `Arc`, so a node holds one mapping per distinct value.

use std::fmt;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mlock, mmap_anonymous, munmap};
use zeroize::Zeroize;

/// The system's page size: the granularity of a value's mapping (4096 when
/// `sysconf` gives nothing usable). For crates that forbid `unsafe`.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(4096)
    })
}

/// Set once the first `mlock` was refused, so the warning is logged once.
static LOCK_REFUSED: AtomicBool = AtomicBool::new(false);

/// A private anonymous mapping of whole pages, not dumped, locked when the
/// memlock limit allows, wiped and unmapped on drop.
struct Region {
    ptr: NonNull<u8>,
    /// Bytes in use (the value's length).
    len: usize,
    backing: Backing,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// No bytes, nothing allocated.
    Empty,
    /// A mapping of this many bytes (a multiple of the page size).
    Mapped(usize),
    /// The heap (`Box<[u8]>` of `len` bytes), when no mapping could be made.
    Heap,
}

// SAFETY: the memory is owned by this value alone, and after construction
// it is only read through `&self`.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

/// Set once a fallback was warned about, so each warning is logged once.
static MAP_REFUSED: AtomicBool = AtomicBool::new(false);

impl Region {
    const EMPTY: Region = Region {
        ptr: NonNull::dangling(),
        len: 0,
        backing: Backing::Empty,
    };

    /// A region holding a copy of `bytes`.
    fn copy_of(bytes: &[u8]) -> Region {
        if bytes.is_empty() {
            return Region::EMPTY;
        }
        let page = page_size();
        let mapped = bytes.len().div_ceil(page) * page;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing; nothing else refers to it.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                mapped,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        };
        let Some(ptr) = ptr.ok().and_then(|p| NonNull::new(p.cast::<u8>())) else {
            // With `mlockall(MCL_FUTURE)` and a full memlock limit, mmap
            // itself is refused: keep serving from the heap.
            if !MAP_REFUSED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "mmap of secret memory failed (RLIMIT_MEMLOCK reached?): secret bytes are kept on the heap, where a core dump or swap could see them; raise the memlock limit (warned once)"
                );
            }
            let heap: Box<[u8]> = bytes.into();
            return Region {
                len: bytes.len(),
                // SAFETY: `Box::into_raw` never returns null.
                ptr: unsafe { NonNull::new_unchecked(Box::into_raw(heap).cast::<u8>()) },
                backing: Backing::Heap,
            };
        };
        let region = Region {
            ptr,
            len: bytes.len(),
            backing: Backing::Mapped(mapped),
        };
        // Both before the bytes are written: no dump and no swap ever see
        // them. SAFETY: the range is the mapping just made.
        if let Err(e) = unsafe { madvise(ptr.as_ptr().cast(), mapped, Advice::LinuxDontDump) } {
            tracing::warn!(error = %e, "madvise(MADV_DONTDUMP) failed: a core dump could hold secret bytes");
        }
        // SAFETY: as above.
        if let Err(e) = unsafe { mlock(ptr.as_ptr().cast(), mapped) }
            && !LOCK_REFUSED.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                error = %e,
                "mlock of secret memory failed (RLIMIT_MEMLOCK too low?): secret bytes may be swapped out; give the process CAP_IPC_LOCK or a higher memlock limit (warned once)"
            );
        }
        // SAFETY: the mapping is writable, `mapped >= bytes.len()`, and it
        // cannot overlap `bytes` (it is new).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        region
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialized bytes (or dangling
        // with `len == 0`) for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Zeroes every byte owned (volatile writes: not optimised away).
    fn wipe(&mut self) {
        let owned = match self.backing {
            Backing::Empty => return,
            Backing::Mapped(mapped) => mapped,
            Backing::Heap => self.len,
        };
        // SAFETY: the whole range is writable and owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), owned) }.zeroize();
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: drop wipes but leaves the mapping to the test, which reads it
    /// and unmaps it itself.
    static KEEP_MAPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for Region {
    fn drop(&mut self) {
        self.wipe();
        match self.backing {
            Backing::Empty => {}
            Backing::Heap => {
                let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
                // SAFETY: made by `Box::into_raw` of a box of `len` bytes.
                drop(unsafe { Box::from_raw(raw) });
            }
            Backing::Mapped(mapped) => {
                #[cfg(test)]
                if KEEP_MAPPED.with(|k| k.get()) {
                    return;
                }
                // SAFETY: the mapping was made by `copy_of` with this length
                // and no reference into it outlives `self`.
                if let Err(e) = unsafe { munmap(self.ptr.as_ptr().cast(), mapped) } {
                    tracing::warn!(error = %e, "munmap of wiped secret memory failed");
                }
            }
        }
    }
}

/// Secret file contents.
///
/// The bytes live in locked memory excluded from core dumps (see the module
/// documentation) and are wiped when the value is dropped; `Debug` shows
/// only the length, and there is no `Display`. Contents are shared between
/// volumes as `Arc<SecretBytes>`, so a replaced value is wiped when its last
/// reader lets go of it.
pub struct SecretBytes(Region);

impl Default for SecretBytes {
    fn default() -> Self {
        Self(Region::EMPTY)
    }
}

impl SecretBytes {
    /// Takes `bytes` into locked memory and wipes the heap buffer.
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let value = Self::from_slice(&bytes);
        // Wipes the whole capacity, not only `len`.
        bytes.zeroize();
        value
    }

    /// Copies `bytes` into locked memory. The caller keeps (and should wipe)
    /// its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(Region::copy_of(bytes))
    }

    /// The secret bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::from_slice(self.expose())
    }
}

impl PartialEq for SecretBytes {
    /// Compares in time independent of where the first difference is.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose(), other.expose());
        a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.len())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(bytes: &[u8]) -> Self {
        Self::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let s = SecretBytes::from_slice(b"hunter2-very-secret");
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("19 bytes"), "{shown}");
    }

    #[test]
    fn new_keeps_exact_contents_whatever_the_capacity() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(b"abc");
        assert_eq!(SecretBytes::new(v).expose(), b"abc");
        assert_eq!(SecretBytes::new(b"xyz".to_vec()).expose(), b"xyz");
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(SecretBytes::from_slice(b"a"), SecretBytes::from_slice(b"a"));
        assert_ne!(SecretBytes::from_slice(b"a"), SecretBytes::from_slice(b"b"));
        assert_ne!(
            SecretBytes::from_slice(b"a"),
            SecretBytes::from_slice(b"ab")
        );
    }

    /// The `VmFlags` of the `/proc/self/smaps` mapping holding `addr`.
    fn vm_flags_at(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_owned).collect();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    fn locked_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// nextest runs each test in its own process: VmLck counts only what
    /// this test locked (no `mlockall` here).
    #[test]
    fn secret_bytes_live_in_locked_memory_excluded_from_dumps() {
        let before = locked_kb();
        let value = SecretBytes::from_slice(&[7u8; 10_000]);
        let addr = value.expose().as_ptr() as usize;
        assert_eq!(addr % page_size(), 0, "page-aligned mapping");
        let flags = vm_flags_at(addr);
        assert!(flags.iter().any(|f| f == "dd"), "MADV_DONTDUMP: {flags:?}");
        assert!(flags.iter().any(|f| f == "lo"), "mlocked: {flags:?}");
        let pages = 10_000usize.div_ceil(page_size()) * page_size() / 1024;
        assert!(
            locked_kb() >= before + pages as u64,
            "VmLck grows by the value's pages"
        );
        assert!(!LOCK_REFUSED.load(Ordering::Relaxed), "no fallback taken");
        // Values made from a Vec and clones get their own locked mapping.
        let from_vec = SecretBytes::new(b"from a vec".to_vec());
        let copy = value.clone();
        for v in [&from_vec, &copy] {
            let flags = vm_flags_at(v.expose().as_ptr() as usize);
            assert!(flags.iter().any(|f| f == "dd") && flags.iter().any(|f| f == "lo"));
        }
        drop((value, copy));
        assert!(
            locked_kb() < before + pages as u64 * 2,
            "dropped values are unmapped"
        );
    }

    #[test]
    fn a_dropped_value_is_wiped_before_its_memory_is_released() {
        let value = SecretBytes::from_slice(b"hunter2-very-secret");
        let (ptr, len) = (value.expose().as_ptr(), value.len());
        let mapped = page_size();
        assert_eq!(value.expose(), b"hunter2-very-secret");
        // The drop wipes as always but leaves the pages mapped, so the test
        // still owns the memory it reads next.
        KEEP_MAPPED.with(|k| k.set(true));
        drop(value);
        KEEP_MAPPED.with(|k| k.set(false));
        // SAFETY: the mapping is still there (KEEP_MAPPED) and nothing else
        // refers to it; the test unmaps it below.
        let after = unsafe { std::slice::from_raw_parts(ptr, mapped) };
        assert_eq!(&after[..len], &[0u8; 19], "the value's bytes are zeroed");
        assert!(after.iter().all(|b| *b == 0), "the whole mapping is zeroed");
        // SAFETY: the mapping the dropped value left; no reference remains.
        unsafe { munmap(ptr as *mut _, mapped) }.unwrap();
    }

    #[test]
    fn empty_values_map_nothing() {
        let empty = SecretBytes::default();
        assert!(empty.is_empty() && empty.expose().is_empty());
        assert_eq!(SecretBytes::new(Vec::new()), empty);
        assert_eq!(empty.clone().len(), 0);
    }
}
