//! Drivers: one module per thing the agent manages on its host.

pub mod bandwidth;
pub mod containers;
pub mod core;
pub mod files;
pub mod metrics;
pub mod services;
pub mod wireguard;
