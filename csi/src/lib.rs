//! `secretfs-csi`: the CSI v1 Identity and Node services of a node-only,
//! ephemeral-volume plugin, over a [`VolumeManager`] trait, on a Unix
//! socket. It knows nothing of FUSE, vaults or Kubernetes objects.

#![forbid(unsafe_code)]

pub mod authority;
pub mod error_types;
pub mod failures;
pub mod manager;
pub mod node;
pub mod server;

pub mod proto {
    //! Generated from `proto/*.proto`.
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod csi {
        tonic::include_proto!("csi.v1");
    }
    /// The secrets-store provider protocol (`v1alpha1.CSIDriverProvider`).
    pub mod provider {
        tonic::include_proto!("v1alpha1");
    }
    /// gRPC health checking (`grpc.health.v1.Health`, Check only).
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
}

pub use manager::{
    ErrorCode, PublishRequest, Readiness, UnpublishRequest, VolumeContext, VolumeError,
    VolumeManager, keys,
};
pub use node::{IdentityService, NodeService};
pub use server::{ServerError, SocketFile, bind, bind_owned, serve, services, socket_path};
