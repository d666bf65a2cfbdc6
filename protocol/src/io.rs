//! Async frame helpers over any tokio byte stream (quinn's streams implement these traits).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, CodecError, PREFIX_LEN};
use crate::messages::{Envelope, Message};

/// Reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one envelope. `Ok(None)` on a clean end of stream at a frame boundary.
pub async fn read_envelope<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Envelope>, FrameIoError> {
    match read_frame_body(reader).await? {
        Some(body) => Ok(Some(codec::decode_body(&body)?)),
        None => Ok(None),
    }
}

/// Reads one length-prefixed frame body. `Ok(None)` on a clean end of stream before a frame.
async fn read_frame_body<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameIoError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut filled = 0;
    while filled < PREFIX_LEN {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        filled += n;
    }
    let mut body = vec![0u8; codec::body_len(prefix)?];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads envelopes from a long-lived stream and forwards them, so that a `select!` loop can
/// consume them without cancelling a half-read frame. A frame that does not decode is forwarded
/// as `Err` (the peer broke the protocol) and ends the forwarding; so does the stream ending or
/// failing underneath (the link is going away), which just closes the channel.
pub async fn forward_messages<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: tokio::sync::mpsc::Sender<Result<Message, CodecError>>,
) {
    loop {
        let item = match read_envelope(&mut reader).await {
            Ok(Some(envelope)) => Ok(envelope.message),
            Ok(None) | Err(FrameIoError::Io(_)) => return,
            Err(FrameIoError::Codec(e)) => Err(e),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// Reads one message; end of stream is an error here.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Message, FrameIoError> {
    match read_envelope(reader).await? {
        Some(env) => Ok(env.message),
        None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
    }
}

/// Writes one message in the current envelope.
pub async fn write_message<W: AsyncWrite + Unpin>(writer: &mut W, message: Message) -> Result<(), FrameIoError> {
    let frame = codec::encode(&Envelope::new(message))?;
    writer.write_all(&frame).await?;
    Ok(())
}

use crate::ids::RequestId;
use crate::rpc::{Request, RequestKind, Response, RpcError, RpcResult};

/// A call over one bi-stream failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    #[error("peer answered with {0}")]
    UnexpectedMessage(&'static str),
    #[error("response is for request {got}, expected {expected}")]
    WrongId { expected: RequestId, got: RequestId },
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// Client side of one RPC on an opened bi-stream: writes the request, finishes nothing (the
/// caller finishes its send half), and reads the response.
pub async fn call<W, R>(send: &mut W, recv: &mut R, request: Request) -> Result<Vec<u8>, CallError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let id = request.id;
    write_message(send, Message::Request(request)).await?;
    send.flush().await.map_err(FrameIoError::from)?;
    match read_message(recv).await? {
        Message::Response(Response { id: got, result }) if got == id => match result {
            RpcResult::Ok(body) => Ok(body),
            RpcResult::Err(e) => Err(CallError::Rpc(e)),
        },
        Message::Response(r) => Err(CallError::WrongId { expected: id, got: r.id }),
        other => Err(CallError::UnexpectedMessage(other.name())),
    }
}

/// Server side of one RPC: reads a request, asks `handler` for the result, writes the response.
/// Returns the kind that was served.
pub async fn answer<W, R, F, Fut>(send: &mut W, recv: &mut R, handler: F) -> Result<RequestKind, FrameIoError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = RpcResult>,
{
    let request = read_request(recv).await?;
    let (id, kind) = (request.id, request.kind);
    let result = handler(request).await;
    write_response(send, id, result).await?;
    Ok(kind)
}

/// Reads the request that opens a bi-stream.
pub async fn read_request<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Request, FrameIoError> {
    match read_message(recv).await? {
        Message::Request(r) => Ok(r),
        other => Err(CodecError::Malformed(format!("expected Request, got {}", other.name())).into()),
    }
}

/// Writes the response to request `id` and flushes it.
pub async fn write_response<W: AsyncWrite + Unpin>(
    send: &mut W,
    id: RequestId,
    result: RpcResult,
) -> Result<(), FrameIoError> {
    write_message(send, Message::Response(Response { id, result })).await?;
    send.flush().await?;
    Ok(())
}

use crate::containers::ConsoleFrame;

/// Writes one frame of a console stream (a `u32` big-endian length, then the bincode body).
pub async fn write_console_frame<W: AsyncWrite + Unpin>(
    send: &mut W,
    frame: &ConsoleFrame,
) -> Result<(), FrameIoError> {
    let body = codec::encode_body(frame)?;
    if body.len() > codec::MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(body.len()).into());
    }
    let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    send.write_all(&out).await?;
    send.flush().await?;
    Ok(())
}

/// Reads one frame of a console stream; `Ok(None)` when the peer finished it cleanly.
pub async fn read_console_frame<R: AsyncRead + Unpin>(recv: &mut R) -> Result<Option<ConsoleFrame>, FrameIoError> {
    match read_frame_body(recv).await? {
        Some(body) => Ok(Some(codec::decode_from(&body)?)),
        None => Ok(None),
    }
}

/// Reads console frames until the stream ends or breaks and forwards them, so that a `select!`
/// loop can consume them without cancelling a half-read frame.
pub async fn forward_console_frames<R: AsyncRead + Unpin>(mut recv: R, tx: tokio::sync::mpsc::Sender<ConsoleFrame>) {
    while let Ok(Some(frame)) = read_console_frame(&mut recv).await {
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}
