//! secretfs-e2e
