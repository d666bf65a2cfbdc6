//! Flotilla's wire contract: the messages agent and controller exchange over QUIC, and the
//! length-prefixed bincode codec that frames them.
//!
//! The crate does no IO (the optional `tokio` feature adds two small async frame helpers).
//! Bincode is not self-describing, so a shipped type is never edited: new behaviour arrives as a
//! new request/event kind or a new versioned body type. Golden-bytes tests pin every wire type.

pub mod backup;
pub mod bandwidth;
pub mod close;
pub mod codec;
pub mod containers;
pub mod enroll;
pub mod facts;
pub mod files;
pub mod ids;
#[cfg(feature = "tokio")]
pub mod io;
pub mod messages;
pub mod metrics;
pub mod proxy;
pub mod rpc;
pub mod services;
pub mod token;
pub mod upgrade;
pub mod users;
pub mod v2ray_stat;
pub mod wireguard;

pub use codec::{CodecError, FrameBuffer, MAX_FRAME_LEN};
pub use ids::{NodeId, RequestId};
pub use messages::{Envelope, Message};

/// ALPN of an enrolled agent's link.
pub const ALPN_LINK: &[u8] = b"flotilla/1";
/// ALPN used once, by `flotilla-agent enroll`, before the agent has a certificate.
pub const ALPN_ENROLL: &[u8] = b"flotilla-enroll/1";
/// Name the controller's QUIC certificate carries and agents verify. Trust comes from the private
/// CA pinned at enrollment, not from DNS, so one fixed name works for any address.
pub const CONTROLLER_SERVER_NAME: &str = "flotilla-controller";

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: messages::ProtocolVersion = messages::ProtocolVersion { major: 1, minor: 0 };
