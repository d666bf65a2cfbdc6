//! Compiles `proto/core.proto` (our own description of the Xray/v2ray API messages) into prost
//! messages. No service code: the agent picks the gRPC path per core flavor at runtime.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["proto/core.proto"], &["proto"])?;
    Ok(())
}
