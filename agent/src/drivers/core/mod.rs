//! Proxy core driver: Xray and v2ray over their gRPC API (users live, stats polled), the core
//! process itself (supervised or external), its config file, and the traffic journal feed.

pub mod api;
pub mod config;
pub mod process;
