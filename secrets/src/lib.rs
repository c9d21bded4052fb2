//! `secretfs-secrets`: the types that hold secret values, and the process's
//! memory hardening. A leaf: it depends on no other crate of the workspace,
//! and every other one that touches a secret value depends on it.
//!
//! - [`SecretBytes`]: file contents in a locked mapping of their own,
//!   excluded from core dumps, wiped on drop.
//! - [`SecretString`]: tokens, client secrets, text values; wiped on drop.
//! - [`SecretMap`]: a request's secrets (key → value text); wiped on drop.
//! - [`hygiene`]: `mlockall` and `PR_SET_DUMPABLE 0` for the whole process.
//!
//! None implements `Display`, and `Debug` never shows a value: reading one
//! takes an explicit `expose`.

// Unsafe code only in `bytes`: the locked, non-dumped mappings of secret
// bytes (mmap, madvise, mlock) have no safe interface.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod bytes;
pub mod hygiene;
mod map;
mod string;

pub use bytes::{SecretBytes, page_size};
pub use map::SecretMap;
pub use string::SecretString;
