//! Drivers: one module per thing the agent manages on its host.

pub mod containers;
pub mod core;
pub mod metrics;
pub mod wireguard;
