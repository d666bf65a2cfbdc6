//! flotilla-agent: one per host. Dials the controller over mutual-TLS QUIC, reports host facts and
//! metrics, and keeps the host serving on its last good state while the controller is away.

pub mod clock;
pub mod config;
pub mod drivers;
pub mod enroll;
pub mod facts;
pub mod identity;
pub mod link;
pub mod local_api;
pub mod logging;
pub mod signals;
pub mod state;
pub mod upgrade;
