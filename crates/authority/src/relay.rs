//! The relay: HTTP/2 frames copied both ways, header blocks from the
//! client re-encoded with a parsable `:authority`.

use std::io;

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// h2's default SETTINGS_MAX_FRAME_SIZE; tonic does not raise it, so frames
/// we emit towards it stay within this.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// What replaces an authority `h2` would reject: what grpc-go (and so
/// kubelet ≥ 1.26) sends for a unix socket.
const LOCALHOST: &[u8] = b"localhost";

/// Why a relayed connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or writing either side failed.
    #[error("relay I/O: {0}")]
    Io(io::Error),
    /// The client's frames break HTTP/2's framing rules.
    #[error("malformed HTTP/2 from the client: {0}")]
    Protocol(&'static str),
    /// A header block the client sent does not decode.
    #[error("undecodable HPACK header block: {0:?}")]
    Hpack(loona_hpack::decoder::DecoderError),
}

// By hand rather than `#[from]`, which would also make the I/O error the
// source: the message already prints it.
impl From<io::Error> for RelayError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Client-to-server byte rewriter: feed it what the client sent, get back
/// what the server should see.
pub(crate) struct Rewriter {
    decoder: Decoder<'static>,
    buf: Vec<u8>,
    state: State,
    pending: Option<Pending>,
    rewritten: u64,
}

enum State {
    Preface,
    Frames,
    /// Not HTTP/2 with prior knowledge: nothing to fix, relay verbatim.
    Passthrough,
}

struct Pending {
    stream_id: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            decoder: Decoder::new(),
            buf: Vec::new(),
            state: State::Preface,
            pending: None,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// How many `:authority` values were replaced so far.
    pub(crate) fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Consumes `input`, appending complete output to `out`. Partial frames
    /// are kept until the rest arrives.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RelayError> {
        if matches!(self.state, State::Passthrough) {
            out.extend_from_slice(input);
            return Ok(());
        }
        self.buf.extend_from_slice(input);
        if matches!(self.state, State::Preface) {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf.get(..n) != PREFACE.get(..n) {
                self.state = State::Passthrough;
                out.append(&mut self.buf);
                return Ok(());
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            out.extend_from_slice(PREFACE);
            self.buf.drain(..PREFACE.len());
            self.state = State::Frames;
        }
        let mut at = 0;
        // A frame header: 24-bit length, type, flags, 31-bit stream id.
        while let Some(&[l0, l1, l2, ty, flags, s0, s1, s2, s3]) = self
            .buf
            .get(at..)
            .and_then(|rest| rest.first_chunk::<FRAME_HEADER_LEN>())
        {
            let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let stream_id = [s0, s1, s2, s3];
            let end = at + FRAME_HEADER_LEN + len;
            let Some(payload) = self.buf.get(at + FRAME_HEADER_LEN..end) else {
                break;
            };
            match ty {
                TYPE_HEADERS => {
                    if self.pending.is_some() {
                        return Err(RelayError::Protocol("HEADERS inside a header block"));
                    }
                    let mut p = payload;
                    if flags & FLAG_PADDED != 0 {
                        let (&pad, rest) = p
                            .split_first()
                            .ok_or(RelayError::Protocol("padded HEADERS without pad length"))?;
                        let keep = rest
                            .len()
                            .checked_sub(usize::from(pad))
                            .ok_or(RelayError::Protocol("HEADERS padding exceeds frame"))?;
                        p = rest.get(..keep).unwrap_or_default();
                    }
                    let mut priority = None;
                    if flags & FLAG_PRIORITY != 0 {
                        let Some((pr, rest)) = p.split_first_chunk::<5>() else {
                            return Err(RelayError::Protocol("short HEADERS priority"));
                        };
                        priority = Some(*pr);
                        p = rest;
                    }
                    let pending = Pending {
                        stream_id,
                        end_stream: flags & FLAG_END_STREAM != 0,
                        priority,
                        block: p.to_vec(),
                    };
                    if flags & FLAG_END_HEADERS != 0 {
                        self.emit(pending, out)?;
                    } else {
                        self.pending = Some(pending);
                    }
                }
                TYPE_CONTINUATION => {
                    let mut pending = self
                        .pending
                        .take()
                        .ok_or(RelayError::Protocol("CONTINUATION without HEADERS"))?;
                    pending.block.extend_from_slice(payload);
                    if flags & FLAG_END_HEADERS != 0 {
                        self.emit(pending, out)?;
                    } else {
                        self.pending = Some(pending);
                    }
                }
                _ => {
                    if self.pending.is_some() {
                        return Err(RelayError::Protocol("frame interleaved in a header block"));
                    }
                    out.extend_from_slice(self.buf.get(at..end).unwrap_or_default());
                }
            }
            at = end;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn emit(&mut self, p: Pending, out: &mut Vec<u8>) -> Result<(), RelayError> {
        let headers = self.decoder.decode(&p.block).map_err(RelayError::Hpack)?;
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                self.rewritten += 1;
                LOCALHOST
            } else {
                value
            };
            encode_literal(name, value, &mut block);
        }
        let mut first = true;
        let mut rest = block.as_slice();
        loop {
            let room = if first && p.priority.is_some() {
                MAX_FRAME_PAYLOAD - 5
            } else {
                MAX_FRAME_PAYLOAD
            };
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            let mut flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            let ty = if first {
                if p.end_stream {
                    flags |= FLAG_END_STREAM;
                }
                if p.priority.is_some() {
                    flags |= FLAG_PRIORITY;
                }
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let prio: &[u8] = match (&p.priority, first) {
                (Some(pr), true) => pr,
                _ => &[],
            };
            let len = chunk.len() + prio.len();
            // len <= MAX_FRAME_PAYLOAD, so it fits the 24-bit length field.
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
            out.extend_from_slice(&p.stream_id);
            out.extend_from_slice(prio);
            out.extend_from_slice(chunk);
            first = false;
            rest = tail;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2),
/// no Huffman coding.
pub(crate) fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_len(name.len(), out);
    out.extend_from_slice(name);
    encode_len(value.len(), out);
    out.extend_from_slice(value);
}

/// HPACK integer with a 7-bit prefix and the Huffman bit clear (RFC 7541 §5.1).
fn encode_len(mut n: usize, out: &mut Vec<u8>) {
    if n < 0x7f {
        out.push(n as u8);
        return;
    }
    out.push(0x7f);
    n -= 0x7f;
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Relays one connection: `client` is the accepted socket, `server` the
/// tonic side. Ends when either side closes or misbehaves; returns how
/// many `:authority` values were replaced.
pub async fn relay<C, S>(client: C, server: S) -> Result<u64, RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut server_rd, mut server_wr) = tokio::io::split(server);
    let upstream = async {
        let mut rw = Rewriter::default();
        let mut input = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(16 * 1024);
        loop {
            let n = client_rd.read(&mut input).await?;
            if n == 0 {
                server_wr.shutdown().await?;
                return Ok::<u64, RelayError>(rw.rewritten());
            }
            out.clear();
            rw.feed(input.get(..n).unwrap_or_default(), &mut out)?;
            if !out.is_empty() {
                server_wr.write_all(&out).await?;
            }
        }
    };
    let downstream = async {
        tokio::io::copy(&mut server_rd, &mut client_wr).await?;
        client_wr.shutdown().await?;
        Ok::<(), RelayError>(())
    };
    let (rewritten, ()) = tokio::try_join!(upstream, downstream)?;
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        v.extend_from_slice(&stream.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Splits the rewriter's output into frames and decodes every header
    /// block with a fresh decoder, as the server would.
    fn server_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut at = PREFACE.len();
        let mut dec = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        while at < bytes.len() {
            let h = &bytes[at..at + 9];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            assert!(len <= MAX_FRAME_PAYLOAD);
            let payload = &bytes[at + 9..at + 9 + len];
            if h[3] == TYPE_HEADERS || h[3] == TYPE_CONTINUATION {
                let skip = if h[3] == TYPE_HEADERS && h[4] & FLAG_PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&payload[skip..]);
                if h[4] & FLAG_END_HEADERS != 0 {
                    blocks.push(dec.decode(&block).unwrap());
                    block.clear();
                }
            }
            at += 9 + len;
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[test]
    fn socket_path_authority_becomes_localhost_and_valid_one_is_kept() {
        // The client's encoder indexes headers, so the second block refers
        // to entries the first one added: the rewriter must track them.
        let mut enc = loona_hpack::Encoder::new();
        let path_req: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/v1beta1.DevicePlugin/Allocate"),
            (b":authority", b"/var/lib/kubelet/device-plugins/r.sock"),
            (b"content-type", b"application/grpc"),
        ];
        let b1 = enc.encode(path_req.iter().copied());
        let b2 = enc.encode(path_req.iter().copied());
        let ok_req: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"POST"), (b":authority", b"localhost:1234")];
        let b3 = enc.encode(ok_req.iter().copied());

        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"grpc-body"));
        // Second block split over HEADERS + CONTINUATION, with padding.
        let (x, y) = b2.split_at(3);
        let mut padded = vec![2u8];
        padded.extend_from_slice(x);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(TYPE_HEADERS, FLAG_PADDED, 3, &padded));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, y));
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            5,
            &b3,
        ));

        // Feed byte by byte: frames straddle reads on a real socket.
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        for b in &input {
            rw.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(authority(&blocks[1]), b"localhost");
        assert_eq!(authority(&blocks[2]), b"localhost:1234");
        assert_eq!(blocks[1][2].1, b"/v1beta1.DevicePlugin/Allocate");
        assert_eq!(rw.rewritten(), 2);
        // Non-header frames pass through verbatim.
        assert!(out.windows(9).any(|w| w == b"grpc-body"));
    }

    #[test]
    fn large_header_blocks_are_split_into_frames_the_server_accepts() {
        let mut enc = loona_hpack::Encoder::new();
        let big = vec![b'x'; 40_000];
        let block = enc.encode([
            (&b":authority"[..], &b"/p.sock"[..]),
            (&b"x-big"[..], &big[..]),
        ]);
        let mut input = PREFACE.to_vec();
        let (a, b) = block.split_at(block.len() / 2);
        input.extend(frame(TYPE_HEADERS, 0, 1, a));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&input, &mut out).unwrap();
        let blocks = server_view(&out);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(blocks[0][1].1.len(), 40_000);
    }

    #[test]
    fn non_http2_bytes_pass_through_untouched() {
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn continuation_without_headers_is_refused() {
        let mut rw = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        assert!(rw.feed(&input, &mut Vec::new()).is_err());
    }

    #[test]
    fn long_literal_lengths_use_continuation_bytes() {
        let mut out = Vec::new();
        encode_len(1337, &mut out);
        // RFC 7541 C.1.2 shows 1337 with a 5-bit prefix; with 7 bits:
        // 127 + 1210 → 0x7f, 1210 = 0b1001_0111010 → 0xba 0x09.
        assert_eq!(out, vec![0x7f, 0xba, 0x09]);
    }
}
