//! Framing: a big-endian `u32` length, then bincode 2 (standard config) of an [`Envelope`].
//!
//! Decoding is total: any byte string yields a frame, "need more bytes", or an error; never a
//! panic, and never an allocation larger than [`MAX_FRAME_LEN`].

use crate::messages::{Envelope, ENVELOPE_VERSION};

/// Largest frame body accepted or produced (4 MiB). Bulk data (files, backups) is chunked.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Length prefix size.
pub const PREFIX_LEN: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// A frame that cannot be produced or understood.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    #[error("envelope version {0} is not supported (this build speaks {ENVELOPE_VERSION})")]
    EnvelopeVersion(u16),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes one envelope as a complete frame (prefix included).
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; PREFIX_LEN];
    bincode::serde::encode_into_std_write(envelope, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = out.len() - PREFIX_LEN;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    out[..PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Reads a length prefix, refusing lengths over the limit before anything is allocated.
pub fn body_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame body (the bytes after the prefix).
pub fn decode_body(body: &[u8]) -> Result<Envelope, CodecError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(body.len()));
    }
    // Peek at the version first so a future envelope gets a precise error, not "malformed".
    let (version, _): (u16, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if version != ENVELOPE_VERSION {
        return Err(CodecError::EnvelopeVersion(version));
    }
    let (envelope, used): (Envelope, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(envelope)
}

/// Encodes a message body (the payload of a request, response or event).
pub fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a message body, requiring it to be consumed exactly.
pub fn decode_from<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Incremental sans-IO decoder: feed bytes as they arrive, take whole envelopes out.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole envelope, `Ok(None)` if more bytes are needed. After an error the stream
    /// is out of sync and must be dropped.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, CodecError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let prefix: [u8; PREFIX_LEN] = self.buf[..PREFIX_LEN].try_into().expect("4 bytes");
        let len = body_len(prefix)?;
        if self.buf.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let envelope = decode_body(&self.buf[PREFIX_LEN..PREFIX_LEN + len]);
        self.buf.drain(..PREFIX_LEN + len);
        envelope.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Heartbeat, Message};

    #[test]
    fn split_frames_reassemble() {
        let a = encode(&Envelope::new(Message::Heartbeat(Heartbeat { seq: 1, sent_at_us: 2 }))).unwrap();
        let b = encode(&Envelope::new(Message::HeartbeatAck(Heartbeat { seq: 3, sent_at_us: 4 }))).unwrap();
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut fb = FrameBuffer::new();
        let mut out = vec![];
        for byte in all {
            fb.extend(&[byte]);
            while let Some(env) = fb.next_envelope().unwrap() {
                out.push(env.message);
            }
        }
        assert_eq!(
            out,
            vec![
                Message::Heartbeat(Heartbeat { seq: 1, sent_at_us: 2 }),
                Message::HeartbeatAck(Heartbeat { seq: 3, sent_at_us: 4 })
            ]
        );
        assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let mut fb = FrameBuffer::new();
        fb.extend(&u32::MAX.to_be_bytes());
        assert!(matches!(fb.next_envelope(), Err(CodecError::TooLarge(_))));
    }

    #[test]
    fn future_envelope_version_is_named() {
        let mut frame = encode(&Envelope::new(Message::EventAck(crate::messages::EventAck { seq: 5 }))).unwrap();
        frame[PREFIX_LEN] = 9; // varint 9 instead of 1
        assert!(matches!(decode_body(&frame[PREFIX_LEN..]), Err(CodecError::EnvelopeVersion(9))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let frame = encode(&Envelope::new(Message::EventAck(crate::messages::EventAck { seq: 5 }))).unwrap();
        let mut body = frame[PREFIX_LEN..].to_vec();
        body.push(0);
        assert!(matches!(decode_body(&body), Err(CodecError::Trailing(1))));
    }
}
