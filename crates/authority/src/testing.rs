//! One unary gRPC call written frame by frame, for tests: no Rust HTTP/2
//! client sends the socket-path authorities other stacks send, and a test
//! must see a stream reset as such rather than as a client error.

use std::io;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::relay::encode_literal;

const TYPE_DATA: u8 = 0x0;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK_OR_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// What the server answered on the call's stream.
#[derive(Debug, Default)]
pub struct Answer {
    /// Response headers and trailers, decoded, in arrival order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The DATA payloads: gRPC length-prefixed messages.
    pub body: Vec<u8>,
    /// The RST_STREAM error code, if the server reset the stream.
    pub reset: Option<u32>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first gRPC message of the body, without its 5-byte prefix.
    pub fn message(&self) -> Option<&[u8]> {
        self.body.get(5..)
    }
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len().to_be_bytes();
    out.extend_from_slice(len.get(len.len() - 3..).unwrap_or_default());
    out.extend_from_slice(&[ty, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Calls `path` (`/package.Service/Method`) with the encoded message `msg`
/// on the unix socket `socket`, sending `:authority: authority`, and reads
/// until the stream ends or is reset.
pub async fn raw_call(
    socket: &Path,
    authority: &str,
    path: &str,
    msg: &[u8],
) -> io::Result<Answer> {
    let mut s = UnixStream::connect(socket).await?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(TYPE_SETTINGS, 0, 0, &[], &mut out);
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        encode_literal(name.as_bytes(), value.as_bytes(), &mut block);
    }
    frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block, &mut out);
    let len = u32::try_from(msg.len()).map_err(|_| bad("message too long"))?;
    let mut grpc = vec![0u8];
    grpc.extend_from_slice(&len.to_be_bytes());
    grpc.extend_from_slice(msg);
    frame(TYPE_DATA, FLAG_ACK_OR_END_STREAM, 1, &grpc, &mut out);
    s.write_all(&out).await?;

    let mut dec = loona_hpack::Decoder::new();
    let mut answer = Answer::default();
    loop {
        let mut h = [0u8; 9];
        s.read_exact(&mut h).await?;
        let [l0, l1, l2, ty, flags, s0, s1, s2, s3] = h;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await?;
        let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
        let end = flags & FLAG_ACK_OR_END_STREAM != 0;
        match (ty, stream) {
            (TYPE_SETTINGS, 0) if !end => {
                let mut ack = Vec::new();
                frame(TYPE_SETTINGS, FLAG_ACK_OR_END_STREAM, 0, &[], &mut ack);
                s.write_all(&ack).await?;
            }
            (TYPE_HEADERS, 1) => {
                let headers = dec
                    .decode(&payload)
                    .map_err(|e| bad(&format!("response headers: {e:?}")))?;
                answer.headers.extend(headers);
                if end {
                    return Ok(answer);
                }
            }
            (TYPE_DATA, 1) => {
                answer.body.extend_from_slice(&payload);
                if end {
                    return Ok(answer);
                }
            }
            (TYPE_RST_STREAM, 1) => {
                let code = payload
                    .first_chunk::<4>()
                    .ok_or_else(|| bad("short RST_STREAM"))?;
                answer.reset = Some(u32::from_be_bytes(*code));
                return Ok(answer);
            }
            _ => {}
        }
    }
}
