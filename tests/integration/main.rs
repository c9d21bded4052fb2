//! The root crate's integration tests, in one test binary: one binary
//! links the whole stack once instead of once per file, which keeps a clean
//! test build small (CI's disk). Each module is one area; test names keep
//! their area as the first part (`faults::vault::…`, `node_e2e::seed::…`),
//! so `cargo nextest run -p secretfs --test integration faults::` runs one
//! area.

mod audit;
mod azure_formats;
mod azure_provider;
mod docs;
mod expiry;
mod external_provider;
mod faults;
mod fuzz_regressions;
mod hostile_inputs;
mod keeper;
mod kubelet;
mod layout;
mod load_smoke;
mod node_e2e;
mod peers;
mod provider_plan_props;
mod provider_readiness;
mod real_kube;
mod spc_kube;
mod sync;
mod sync_tls;
mod unread;
mod volume;
