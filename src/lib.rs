//! secretfs
