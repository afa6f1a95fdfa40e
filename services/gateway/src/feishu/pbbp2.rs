//! The long connection's wire format: `pbbp2` protobuf frames (proto2), the frames a
//! client sends (ping, ACK), and the reassembly of a message pushed in chunks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;

/// `method` of a control frame (ping, pong).
pub(crate) const CONTROL: i32 = 0;
/// `method` of a data frame (an event, a card callback).
pub(crate) const DATA: i32 = 1;
/// A partial message is dropped this long after its newest chunk (as the Go SDK does).
pub(crate) const CHUNK_TTL: Duration = Duration::from_secs(5);
/// More chunks than this for one message is not a message Feishu sends.
const MAX_CHUNKS: usize = 1024;

/// `pbbp2.Header`.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

/// `pbbp2.Frame`. Fields 1 to 4 are required: every frame we send carries them.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

impl Frame {
    /// The value of the first header named `key`.
    pub(crate) fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| header.key == key)
            .map(|header| header.value.as_str())
    }

    /// The client's ping: a control frame with `type=ping` and no payload.
    pub(crate) fn ping(service: i32) -> Self {
        Self {
            seq_id: 0,
            log_id: 0,
            service,
            method: CONTROL,
            headers: vec![header("type", "ping")],
            payload_encoding: None,
            payload_type: None,
            payload: None,
            log_id_new: None,
        }
    }

    /// The ACK of a data frame: the frame echoed, `biz_rt` appended, the payload
    /// replaced by `{"code":<code>}`.
    pub(crate) fn ack(&self, code: u16, elapsed: Duration) -> Self {
        let mut ack = self.clone();
        ack.headers
            .push(header("biz_rt", &elapsed.as_millis().to_string()));
        ack.payload = Some(format!("{{\"code\":{code}}}").into_bytes());
        ack
    }
}

fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// One chunk of a pushed message, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub message_id: String,
    pub sum: usize,
    pub seq: usize,
}

impl Chunk {
    /// Reads `message_id`, `sum` and `seq`; a frame without `sum`/`seq` is one whole
    /// chunk. `None` when they are not what Feishu sends (no id, seq out of range).
    pub(crate) fn of(frame: &Frame) -> Option<Self> {
        let message_id = frame.header("message_id").unwrap_or_default().to_owned();
        let number = |key: &str, default: usize| match frame.header(key) {
            None => Some(default),
            Some(value) => value.trim().parse::<usize>().ok(),
        };
        let sum = number("sum", 1)?;
        let seq = number("seq", 0)?;
        let valid = (1..=MAX_CHUNKS).contains(&sum) && seq < sum;
        (valid && (sum == 1 || !message_id.is_empty())).then_some(Self {
            message_id,
            sum,
            seq,
        })
    }
}

/// Buffers the chunks of messages pushed in pieces, by message id, until all arrived.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partial: HashMap<String, Partial>,
}

#[derive(Debug)]
struct Partial {
    chunks: Vec<Option<Vec<u8>>>,
    touched: Instant,
}

impl Reassembly {
    /// Adds a chunk; returns the whole payload (chunks in `seq` order) once the last
    /// missing one arrived. Chunks may come in any order; a repeated chunk replaces the
    /// earlier copy.
    pub(crate) fn add(&mut self, chunk: &Chunk, payload: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        if chunk.sum == 1 {
            return Some(payload);
        }
        let partial = self
            .partial
            .entry(chunk.message_id.clone())
            .or_insert_with(|| Partial {
                chunks: vec![None; chunk.sum],
                touched: now,
            });
        if partial.chunks.len() != chunk.sum {
            // The same id with another count: start over with what this chunk says.
            partial.chunks = vec![None; chunk.sum];
        }
        partial.chunks[chunk.seq] = Some(payload);
        partial.touched = now;
        if partial.chunks.iter().any(Option::is_none) {
            return None;
        }
        let whole = self.partial.remove(&chunk.message_id)?;
        Some(whole.chunks.into_iter().flatten().flatten().collect())
    }

    /// Messages still waiting for chunks.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.partial.len()
    }

    fn expire(&mut self, now: Instant) {
        self.partial
            .retain(|_, partial| now.duration_since(partial.touched) < CHUNK_TTL);
    }
}

/// Decodes a binary WebSocket message; `None` for bytes that are not a frame.
pub(crate) fn decode(bytes: &[u8]) -> Option<Frame> {
    Frame::decode(bytes).ok()
}

pub(crate) fn encode(frame: &Frame) -> Vec<u8> {
    frame.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex"))
            .collect()
    }

    const SERVICE: i32 = 33_554_678;

    fn data_frame_bytes() -> Vec<u8> {
        let mut bytes = hex("08 07 10 09 18 f6 81 80 10 20 01
             2a 0d 0a 04 74 79 70 65 12 05 65 76 65 6e 74
             2a 11 0a 0a 6d 65 73 73 61 67 65 5f 69 64 12 03 6d 2d 31
             2a 08 0a 03 73 75 6d 12 01 31
             2a 08 0a 03 73 65 71 12 01 30
             2a 0f 0a 08 74 72 61 63 65 5f 69 64 12 03 74 2d 31
             42 2b");
        bytes.extend_from_slice(br#"{"schema":"2.0","header":{"event_id":"e1"}}"#);
        bytes
    }

    #[test]
    fn a_ping_encodes_to_the_reference_bytes() {
        let expected =
            hex("08 00 10 00 18 f6 81 80 10 20 00 2a 0c 0a 04 74 79 70 65 12 04 70 69 6e 67");
        assert_eq!(encode(&Frame::ping(SERVICE)), expected);
    }

    #[test]
    fn a_go_style_ping_with_empty_optional_fields_decodes() {
        let bytes = hex(
            "08 00 10 00 18 f6 81 80 10 20 00 2a 0c 0a 04 74 79 70 65 12 04 70 69 6e 67 32 00 3a 00 4a 00",
        );
        let frame = decode(&bytes).expect("a frame");
        assert_eq!(frame.header("type"), Some("ping"));
        assert_eq!(frame.service, SERVICE);
        assert_eq!(frame.log_id_new.as_deref(), Some(""));
        assert_eq!(frame.payload, None);
    }

    #[test]
    fn the_reference_data_frame_decodes_and_its_ack_encodes_to_the_reference_bytes() {
        let frame = decode(&data_frame_bytes()).expect("a frame");
        assert_eq!((frame.seq_id, frame.log_id, frame.method), (7, 9, DATA));
        assert_eq!(frame.header("type"), Some("event"));
        assert_eq!(
            Chunk::of(&frame),
            Some(Chunk {
                message_id: "m-1".into(),
                sum: 1,
                seq: 0
            })
        );
        let mut expected = hex("08 07 10 09 18 f6 81 80 10 20 01
             2a 0d 0a 04 74 79 70 65 12 05 65 76 65 6e 74
             2a 11 0a 0a 6d 65 73 73 61 67 65 5f 69 64 12 03 6d 2d 31
             2a 08 0a 03 73 75 6d 12 01 31
             2a 08 0a 03 73 65 71 12 01 30
             2a 0f 0a 08 74 72 61 63 65 5f 69 64 12 03 74 2d 31
             2a 0b 0a 06 62 69 7a 5f 72 74 12 01 33
             42 0c");
        expected.extend_from_slice(br#"{"code":200}"#);
        assert_eq!(encode(&frame.ack(200, Duration::from_millis(3))), expected);
    }

    #[test]
    fn garbage_is_not_a_frame_and_a_frame_missing_required_fields_is_tolerated() {
        assert!(decode(b"not a frame at all").is_none());
        // As the Python SDK does: method (field 4) missing reads as 0, a control frame.
        let frame = decode(&hex("08 00 10 00 18 01")).expect("a frame");
        assert_eq!(frame.method, CONTROL);
    }

    fn chunk(message_id: &str, sum: usize, seq: usize) -> Chunk {
        Chunk {
            message_id: message_id.into(),
            sum,
            seq,
        }
    }

    #[test]
    fn chunks_arriving_out_of_order_are_joined_in_seq_order_once_all_arrived() {
        let mut reassembly = Reassembly::default();
        let now = Instant::now();
        assert_eq!(reassembly.add(&chunk("m", 3, 2), b"c".to_vec(), now), None);
        assert_eq!(reassembly.add(&chunk("m", 3, 0), b"a".to_vec(), now), None);
        // Another message's chunks do not mix in.
        assert_eq!(reassembly.add(&chunk("n", 2, 0), b"x".to_vec(), now), None);
        assert_eq!(
            reassembly.add(&chunk("m", 3, 1), b"b".to_vec(), now),
            Some(b"abc".to_vec())
        );
        assert_eq!(reassembly.pending(), 1);
        assert_eq!(
            reassembly.add(&chunk("whole", 1, 0), b"w".to_vec(), now),
            Some(b"w".to_vec())
        );
    }

    #[test]
    fn a_partial_message_expires_after_its_newest_chunk_ages() {
        let mut reassembly = Reassembly::default();
        let start = Instant::now();
        assert_eq!(
            reassembly.add(&chunk("m", 2, 0), b"a".to_vec(), start),
            None
        );
        let later = start + CHUNK_TTL + Duration::from_millis(1);
        // The first chunk is gone: the second alone completes nothing.
        assert_eq!(
            reassembly.add(&chunk("m", 2, 1), b"b".to_vec(), later),
            None
        );
        assert_eq!(reassembly.pending(), 1);
    }

    #[test]
    fn chunk_headers_out_of_range_are_refused() {
        let frame = |headers: &[(&str, &str)]| Frame {
            headers: headers
                .iter()
                .map(|(key, value)| header(key, value))
                .collect(),
            ..Frame::ping(1)
        };
        assert!(Chunk::of(&frame(&[("message_id", "m"), ("sum", "2"), ("seq", "2")])).is_none());
        assert!(Chunk::of(&frame(&[("message_id", "m"), ("sum", "0"), ("seq", "0")])).is_none());
        assert!(Chunk::of(&frame(&[("message_id", "m"), ("sum", "x"), ("seq", "0")])).is_none());
        assert!(Chunk::of(&frame(&[("sum", "2"), ("seq", "0")])).is_none());
        assert_eq!(
            Chunk::of(&frame(&[("message_id", "m")])),
            Some(chunk("m", 1, 0))
        );
    }
}
