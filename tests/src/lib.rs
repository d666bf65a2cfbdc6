//! End-to-end harness for Flotilla: starts the real `flotilla-controller` and `flotilla-agent`
//! binaries, each agent in its own network namespace when the machine allows it.

pub mod bench_core;
pub mod harness;
pub mod lxc;
pub mod netns;
pub mod panelica;
pub mod socketio;
pub mod traffic;
pub mod vps;
pub mod wireguard;
