//! Compiles `proto/` with protox (no system `protoc`) and writes the descriptor set that the
//! reflection services serve.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "contoso/catalog/v1/catalog.proto",
        "contoso/orders/v1/orders.proto",
        "contoso/notify/v1/notify.proto",
        "contoso/events/v1/events.proto",
        "contoso/entitlements/v1/entitlements.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("contoso_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
