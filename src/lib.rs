//! secretfs
pub mod provider;
