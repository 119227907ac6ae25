//! Compiles `proto/*.proto` into Rust at build time: protox (a protobuf compiler written in
//! Rust) produces the descriptor set, tonic-prost-build generates messages and gRPC stubs
//! from it. No system `protoc` is involved.

use std::error::Error;

const PROTOS: [&str; 6] = [
    "proto/workload.proto",
    "proto/authorization.proto",
    "proto/citadel.proto",
    "proto/base.proto",
    "proto/status.proto",
    "proto/discovery.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
