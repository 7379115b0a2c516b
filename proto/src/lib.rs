//! Generated types for every Contoso contract in `proto/`, and the encoded descriptor set for
//! server reflection.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

/// The encoded `FileDescriptorSet` of every contract, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/contoso_descriptor.bin"));

pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("contoso.catalog.v1");
    }
}

pub mod orders {
    pub mod v1 {
        tonic::include_proto!("contoso.orders.v1");
    }
}

pub mod notify {
    pub mod v1 {
        tonic::include_proto!("contoso.notify.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("contoso.events.v1");
    }
}

pub mod entitlements {
    pub mod v1 {
        tonic::include_proto!("contoso.entitlements.v1");
    }
}

pub mod convert;
