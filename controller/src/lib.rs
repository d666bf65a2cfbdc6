//! flotilla-controller: holds the fleet's desired state in an embedded SQLite store, keeps one
//! QUIC link per agent, and serves the operators' HTTP APIs.

pub mod adguard;
pub mod agent_package;
pub mod api;
pub mod auth;
pub mod backup;
pub mod config;
pub mod demo;
pub mod email;
pub mod fleet;
pub mod jobs;
pub mod monitoring;
pub mod outbound;
pub mod pki;
pub mod private_file;
pub mod proxy;
pub mod rollout;
pub mod server;
pub mod sharelinks;
pub mod store;
pub mod vps;
pub mod vps_alerts;
pub mod webhooks;
pub mod wireguard;
