//! Code generated from the repository's `proto/` at build time: prost messages and tonic
//! clients and servers, one module per proto package.
//!
//! Nothing here is written by hand, and proto types go no further than the crates that speak
//! gRPC: they convert to domain types at the edge.

pub mod master {
    pub mod v1 {
        tonic::include_proto!("ganglion.master.v1");
    }
}
