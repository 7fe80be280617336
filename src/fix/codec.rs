//! FIX 4.4 tag=value messages: framing a byte stream into messages, checking BeginString,
//! BodyLength and CheckSum, reading fields, and writing messages with their header and trailer.
//!
//! Hostile input is expected: a frame is at most [`MESSAGE_BYTES_MAX`] bytes, and nothing is
//! allocated from a length the peer wrote before that length is checked against the bound. A
//! message whose framing is broken is garbled: the session layer ignores it, as the
//! specification says, and the framer resynchronises on the next `8=FIX`.

use std::ops::Range;

/// The only BeginString spoken.
pub const BEGIN_STRING: &str = "FIX.4.4";

/// The field delimiter (SOH).
pub const SOH: u8 = 0x01;

/// The largest message accepted or written, header and trailer included. An order message is
/// a few hundred bytes; this bounds what one peer can make the node buffer.
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024;

/// Fields one message may carry, at most.
pub const FIELDS_MAX: usize = 256;

/// Tags the exchange reads or writes.
pub mod tag {
    pub const ACCOUNT: u32 = 1;
    pub const AVG_PX: u32 = 6;
    pub const BEGIN_SEQ_NO: u32 = 7;
    pub const BEGIN_STRING: u32 = 8;
    pub const BODY_LENGTH: u32 = 9;
    pub const CHECK_SUM: u32 = 10;
    pub const CL_ORD_ID: u32 = 11;
    pub const CUM_QTY: u32 = 14;
    pub const END_SEQ_NO: u32 = 16;
    pub const EXEC_ID: u32 = 17;
    pub const EXEC_INST: u32 = 18;
    pub const LAST_PX: u32 = 31;
    pub const LAST_QTY: u32 = 32;
    pub const MSG_SEQ_NUM: u32 = 34;
    pub const MSG_TYPE: u32 = 35;
    pub const NEW_SEQ_NO: u32 = 36;
    pub const ORDER_ID: u32 = 37;
    pub const ORDER_QTY: u32 = 38;
    pub const ORD_STATUS: u32 = 39;
    pub const ORD_TYPE: u32 = 40;
    pub const ORIG_CL_ORD_ID: u32 = 41;
    pub const POSS_DUP_FLAG: u32 = 43;
    pub const PRICE: u32 = 44;
    pub const REF_SEQ_NUM: u32 = 45;
    pub const SENDER_COMP_ID: u32 = 49;
    pub const SENDING_TIME: u32 = 52;
    pub const SIDE: u32 = 54;
    pub const SYMBOL: u32 = 55;
    pub const TARGET_COMP_ID: u32 = 56;
    pub const TEXT: u32 = 58;
    pub const TIME_IN_FORCE: u32 = 59;
    pub const TRANSACT_TIME: u32 = 60;
    pub const POSS_RESEND: u32 = 97;
    pub const ENCRYPT_METHOD: u32 = 98;
    pub const CXL_REJ_REASON: u32 = 102;
    pub const ORD_REJ_REASON: u32 = 103;
    pub const HEART_BT_INT: u32 = 108;
    pub const TEST_REQ_ID: u32 = 112;
    pub const ORIG_SENDING_TIME: u32 = 122;
    pub const GAP_FILL_FLAG: u32 = 123;
    pub const RESET_SEQ_NUM_FLAG: u32 = 141;
    pub const EXEC_TYPE: u32 = 150;
    pub const LEAVES_QTY: u32 = 151;
    pub const REF_TAG_ID: u32 = 371;
    pub const REF_MSG_TYPE: u32 = 372;
    pub const SESSION_REJECT_REASON: u32 = 373;
    pub const BUSINESS_REJECT_REASON: u32 = 380;
    pub const CXL_REJ_RESPONSE_TO: u32 = 434;
    pub const MASS_CANCEL_REQUEST_TYPE: u32 = 530;
    pub const MASS_CANCEL_RESPONSE: u32 = 531;
    pub const MASS_CANCEL_REJECT_REASON: u32 = 532;
    pub const TOTAL_AFFECTED_ORDERS: u32 = 533;
    pub const USERNAME: u32 = 553;
    pub const PASSWORD: u32 = 554;
    pub const SELF_TRADE_PREVENTION: u32 = 7928;
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbled {
    /// The first field is not `8=FIX.4.4`.
    BeginString,
    /// The second field is not `9=` and a length within bounds.
    BodyLength,
    /// The body does not end where BodyLength says, or the trailer is not `10=` and three digits.
    Trailer,
    /// The checksum does not match the bytes.
    CheckSum { expected: u8, found: u8 },
    /// A field is not `tag=value` with a numeric tag and a non-empty value, or there are too many.
    Field,
    /// The third field is not MsgType.
    MsgType,
}

impl std::fmt::Display for Garbled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Garbled::BeginString => write!(f, "BeginString(8) is not {BEGIN_STRING}"),
            Garbled::BodyLength => write!(f, "BodyLength(9) is missing or out of bounds"),
            Garbled::Trailer => write!(
                f,
                "the message does not end with CheckSum(10) where BodyLength(9) says"
            ),
            Garbled::CheckSum { expected, found } => {
                write!(
                    f,
                    "CheckSum(10) is {found:03}, the bytes sum to {expected:03}"
                )
            }
            Garbled::Field => write!(f, "a field is not tag=value"),
            Garbled::MsgType => write!(f, "the third field is not MsgType(35)"),
        }
    }
}

/// One message as received: its bytes and where each field's value lies in them.
#[derive(Clone, Debug)]
pub struct Message {
    bytes: Vec<u8>,
    fields: Vec<(u32, Range<usize>)>,
}

impl Message {
    /// Parses one whole frame (as [`Framer`] cuts them): header, body and trailer checked.
    pub fn parse(bytes: Vec<u8>) -> Result<Message, Garbled> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(Garbled::BodyLength);
        }
        let mut fields = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if fields.len() == FIELDS_MAX {
                return Err(Garbled::Field);
            }
            let end = bytes[at..]
                .iter()
                .position(|&b| b == SOH)
                .map(|p| at + p)
                .ok_or(Garbled::Field)?;
            let eq = bytes[at..end]
                .iter()
                .position(|&b| b == b'=')
                .map(|p| at + p)
                .ok_or(Garbled::Field)?;
            let tag = parse_tag(&bytes[at..eq]).ok_or(Garbled::Field)?;
            if eq + 1 == end {
                return Err(Garbled::Field);
            }
            fields.push((tag, eq + 1..end));
            at = end + 1;
        }
        let message = Message { bytes, fields };
        message.check_frame()?;
        Ok(message)
    }

    fn check_frame(&self) -> Result<(), Garbled> {
        let field = |i: usize| {
            self.fields
                .get(i)
                .map(|(t, r)| (*t, &self.bytes[r.clone()]))
        };
        match field(0) {
            Some((tag::BEGIN_STRING, value)) if value == BEGIN_STRING.as_bytes() => {}
            _ => return Err(Garbled::BeginString),
        }
        let body_length = match field(1) {
            Some((tag::BODY_LENGTH, value)) => parse_u64(value)
                .filter(|&n| n as usize <= MESSAGE_BYTES_MAX)
                .ok_or(Garbled::BodyLength)?
                as usize,
            _ => return Err(Garbled::BodyLength),
        };
        if !matches!(field(2), Some((tag::MSG_TYPE, _))) {
            return Err(Garbled::MsgType);
        }
        let (last_tag, last_range) = self.fields.last().cloned().ok_or(Garbled::Trailer)?;
        if last_tag != tag::CHECK_SUM || last_range.len() != 3 {
            return Err(Garbled::Trailer);
        }
        // The body runs from after BodyLength's SOH to the SOH before "10=".
        let body_start = self.fields[1].1.end + 1;
        let trailer_start = last_range.start - 3;
        if trailer_start < body_start || trailer_start - body_start != body_length {
            return Err(Garbled::Trailer);
        }
        let found = parse_u64(&self.bytes[last_range]).ok_or(Garbled::Trailer)?;
        let expected = checksum(&self.bytes[..trailer_start]);
        if found != expected as u64 {
            return Err(Garbled::CheckSum {
                expected,
                found: found.min(255) as u8,
            });
        }
        Ok(())
    }

    /// The message type (MsgType(35)).
    pub fn msg_type(&self) -> &str {
        self.get(tag::MSG_TYPE).unwrap_or("")
    }

    /// The first value of `tag` as text, if present and UTF-8.
    pub fn get(&self, tag: u32) -> Option<&str> {
        self.bytes_of(tag)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    fn bytes_of(&self, tag: u32) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, range)| &self.bytes[range.clone()])
    }

    /// `tag` as an unsigned integer: `None` when absent, `Err` when not a number.
    pub fn get_u64(&self, tag: u32) -> Result<Option<u64>, BadField> {
        match self.bytes_of(tag) {
            None => Ok(None),
            Some(bytes) => parse_u64(bytes).map(Some).ok_or(BadField::Format(tag)),
        }
    }

    /// `tag` as a FIX boolean (`Y` or `N`); absent is `N`.
    pub fn get_flag(&self, tag: u32) -> Result<bool, BadField> {
        match self.bytes_of(tag) {
            None | Some(b"N") => Ok(false),
            Some(b"Y") => Ok(true),
            Some(_) => Err(BadField::Value(tag)),
        }
    }

    /// `tag`, which must be present.
    pub fn require(&self, tag: u32) -> Result<&str, BadField> {
        self.get(tag).ok_or(BadField::Missing(tag))
    }

    /// Whether `tag` appears more than once outside repeating groups this exchange reads.
    pub fn repeats(&self, tag: u32) -> bool {
        self.fields.iter().filter(|(t, _)| *t == tag).count() > 1
    }

    /// The message as it was received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A field that is missing, malformed or not allowed: the session answers it with a Reject(3)
/// whose SessionRejectReason(373) this names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadField {
    Missing(u32),
    Format(u32),
    Value(u32),
}

impl BadField {
    pub fn tag(&self) -> u32 {
        match *self {
            BadField::Missing(t) | BadField::Format(t) | BadField::Value(t) => t,
        }
    }

    /// SessionRejectReason(373): 1 required tag missing, 5 value is incorrect, 6 incorrect
    /// data format.
    pub fn session_reject_reason(&self) -> u32 {
        match self {
            BadField::Missing(_) => 1,
            BadField::Value(_) => 5,
            BadField::Format(_) => 6,
        }
    }
}

impl std::fmt::Display for BadField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadField::Missing(t) => write!(f, "required tag {t} is missing"),
            BadField::Format(t) => write!(f, "tag {t} has an incorrect data format"),
            BadField::Value(t) => write!(f, "tag {t} has a value that is not allowed"),
        }
    }
}

fn parse_tag(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 || bytes[0] == b'0' {
        return None;
    }
    parse_u64(bytes).map(|n| n as u32)
}

/// A non-negative decimal integer of at most 18 digits (no sign, no spaces).
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// The FIX checksum: the sum of the bytes, modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// What the framer found in the stream.
#[derive(Debug)]
pub enum Frame {
    /// One whole frame, to parse.
    Message(Vec<u8>),
    /// Bytes that cannot start or be a message, skipped up to the next `8=FIX`.
    Garbled(Garbled),
}

/// Cuts a TCP byte stream into frames. It looks for `8=FIX.4.4<SOH>9=<len><SOH>`, takes the
/// body and the 7-byte trailer, and hands the whole frame over; anything else is skipped up to
/// the next `8=`.
#[derive(Default)]
pub struct Framer {
    buffer: Vec<u8>,
}

const HEADER_PREFIX: &[u8] = b"8=FIX.4.4\x019=";
const TRAILER_BYTES: usize = 7; // "10=" + three digits + SOH

impl Framer {
    /// Appends bytes read from the stream. The buffer never holds more than one message's
    /// worth plus what one read brings.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.buffer.is_empty() {
            return None;
        }
        // A frame starts at the buffer's start; anything before a possible start is garbage.
        if !self
            .buffer
            .starts_with(&HEADER_PREFIX[..HEADER_PREFIX.len().min(self.buffer.len())])
        {
            let skip = find(&self.buffer[1..], b"8=").map_or(self.buffer.len(), |p| p + 1);
            // Keep a trailing "8" that may begin the next message.
            let skip = if skip == self.buffer.len() && self.buffer.ends_with(b"8") {
                skip - 1
            } else {
                skip
            };
            self.buffer.drain(..skip);
            return Some(Frame::Garbled(Garbled::BeginString));
        }
        if self.buffer.len() < HEADER_PREFIX.len() {
            return None;
        }
        let digits_start = HEADER_PREFIX.len();
        let digits_end = match self.buffer[digits_start..].iter().position(|&b| b == SOH) {
            Some(p) => digits_start + p,
            None if self.buffer.len() - digits_start > 5 => {
                return Some(self.skip_one(Garbled::BodyLength))
            }
            None => return None,
        };
        let Some(body_length) = parse_u64(&self.buffer[digits_start..digits_end])
            .map(|n| n as usize)
            .filter(|&n| digits_end + 1 + n + TRAILER_BYTES <= MESSAGE_BYTES_MAX)
        else {
            return Some(self.skip_one(Garbled::BodyLength));
        };
        let total = digits_end + 1 + body_length + TRAILER_BYTES;
        // Another message's start inside this one's declared length: the length is wrong (a
        // body holds no BeginString), and waiting for it would hold up the next message.
        let declared = &self.buffer[digits_end..self.buffer.len().min(total)];
        if find(declared, b"\x018=FIX.4.4\x01").is_some() {
            return Some(self.skip_one(Garbled::BodyLength));
        }
        if self.buffer.len() < total {
            return None;
        }
        if !self.buffer[total - TRAILER_BYTES..].starts_with(b"10=")
            || self.buffer[total - 1] != SOH
        {
            return Some(self.skip_one(Garbled::Trailer));
        }
        let frame: Vec<u8> = self.buffer.drain(..total).collect();
        Some(Frame::Message(frame))
    }

    /// Drops the bad start and everything up to the next `8=`.
    fn skip_one(&mut self, why: Garbled) -> Frame {
        let skip = find(&self.buffer[1..], b"8=").map_or(self.buffer.len(), |p| p + 1);
        self.buffer.drain(..skip);
        Frame::Garbled(why)
    }

    /// Bytes waiting for the rest of their message.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A message being written: its body fields, then [`Builder::finish`] puts the header and the
/// trailer around them.
pub struct Builder {
    msg_type: &'static str,
    body: Vec<u8>,
    /// PossResend(97) Y in the header: the receiver may have had this message under another
    /// number, and checks by its ids (an ExecutionReport by ExecID).
    poss_resend: bool,
}

impl Builder {
    pub fn new(msg_type: &'static str) -> Self {
        Builder {
            msg_type,
            body: Vec::with_capacity(256),
            poss_resend: false,
        }
    }

    /// A message whose body was written before (a resend).
    pub fn with_body(msg_type: &'static str, body: Vec<u8>, poss_resend: bool) -> Self {
        Builder {
            msg_type,
            body,
            poss_resend,
        }
    }

    /// Marks the message PossResend(97) Y.
    pub fn set_poss_resend(&mut self) {
        self.poss_resend = true;
    }

    pub fn is_poss_resend(&self) -> bool {
        self.poss_resend
    }

    pub fn msg_type(&self) -> &'static str {
        self.msg_type
    }

    /// Adds `tag=value`. A value holding SOH would break the frame: its SOHs are replaced.
    pub fn field(mut self, tag: u32, value: impl std::fmt::Display) -> Self {
        self.push(tag, value);
        self
    }

    pub fn push(&mut self, tag: u32, value: impl std::fmt::Display) {
        use std::io::Write;
        let start = self.body.len();
        let _ = write!(self.body, "{tag}={value}");
        for b in &mut self.body[start..] {
            if *b == SOH {
                *b = b' ';
            }
        }
        self.body.push(SOH);
    }

    /// The body fields written so far (what a resend writes again under a new header).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The whole message: header (BeginString, BodyLength, MsgType, the session's fields),
    /// body, CheckSum.
    pub fn finish(&self, header: &Header<'_>) -> Vec<u8> {
        let mut inner = Builder::new(self.msg_type);
        inner.push(tag::MSG_TYPE, self.msg_type);
        inner.push(tag::SENDER_COMP_ID, header.sender);
        inner.push(tag::TARGET_COMP_ID, header.target);
        inner.push(tag::MSG_SEQ_NUM, header.seq);
        if header.poss_dup {
            inner.push(tag::POSS_DUP_FLAG, "Y");
        }
        if self.poss_resend {
            inner.push(tag::POSS_RESEND, "Y");
        }
        inner.push(tag::SENDING_TIME, header.sending_time);
        if let Some(orig) = header.orig_sending_time {
            inner.push(tag::ORIG_SENDING_TIME, orig);
        }
        inner.body.extend_from_slice(&self.body);
        let mut out = Vec::with_capacity(inner.body.len() + 32);
        out.extend_from_slice(b"8=FIX.4.4\x019=");
        out.extend_from_slice(inner.body.len().to_string().as_bytes());
        out.push(SOH);
        out.extend_from_slice(&inner.body);
        let sum = checksum(&out);
        out.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
        out
    }
}

/// The session's part of an outgoing header.
pub struct Header<'a> {
    pub sender: &'a str,
    pub target: &'a str,
    pub seq: u64,
    pub sending_time: &'a str,
    pub poss_dup: bool,
    pub orig_sending_time: Option<&'a str>,
}

/// A UTCTimestamp with milliseconds (`YYYYMMDD-HH:MM:SS.sss`).
pub fn utc_timestamp(time: std::time::SystemTime) -> String {
    // humantime writes "YYYY-MM-DDTHH:MM:SS.sssZ".
    let text = humantime::format_rfc3339_millis(time).to_string();
    let b = text.as_bytes();
    if b.len() < 23 {
        return text;
    }
    format!(
        "{}{}{}-{}",
        &text[0..4],
        &text[5..7],
        &text[8..10],
        &text[11..23]
    )
}

/// A UTCTimestamp from nanoseconds since the Unix epoch (the engine's timestamps).
pub fn utc_timestamp_ns(ns: u64) -> String {
    utc_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header<'static> {
        Header {
            sender: "EXCHANGE",
            target: "BROKER1",
            seq: 7,
            sending_time: "20261203-09:31:03.123",
            poss_dup: false,
            orig_sending_time: None,
        }
    }

    /// A message in the specification's notation, `|` for SOH, with the real BodyLength and
    /// CheckSum filled in.
    fn wire(fields: &str) -> Vec<u8> {
        let body = fields.replace('|', "\x01");
        let mut out = format!("8=FIX.4.4\x019={}\x01{body}", body.len()).into_bytes();
        let sum = checksum(&out);
        out.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
        out
    }

    #[test]
    fn a_written_message_parses_back_with_its_fields() {
        let bytes = Builder::new("8")
            .field(tag::CL_ORD_ID, "abc")
            .field(tag::TEXT, "a\x01b")
            .finish(&header());
        let message = Message::parse(bytes).expect("parses");
        assert_eq!(message.msg_type(), "8");
        assert_eq!(message.get(tag::CL_ORD_ID), Some("abc"));
        assert_eq!(message.get(tag::TEXT), Some("a b"));
        assert_eq!(message.get_u64(tag::MSG_SEQ_NUM), Ok(Some(7)));
        assert_eq!(message.get(tag::SENDER_COMP_ID), Some("EXCHANGE"));
    }

    #[test]
    fn the_specifications_checksum_example_holds() {
        // A heartbeat from the FIX 4.4 specification's style of example: the checksum is the
        // byte sum modulo 256 of everything before "10=".
        let bytes = wire("35=0|49=A|56=B|34=1|52=20261203-09:31:03|");
        let message = Message::parse(bytes.clone()).expect("parses");
        assert_eq!(message.msg_type(), "0");
        let mut bad = bytes;
        let at = bad.len() - 2;
        bad[at] = if bad[at] == b'9' { b'0' } else { b'9' };
        assert!(matches!(Message::parse(bad), Err(Garbled::CheckSum { .. })));
    }

    #[test]
    fn broken_frames_are_garbled_not_panics() {
        for (bytes, why) in [
            (wire("49=A|35=0|"), Garbled::MsgType),
            (
                b"8=FIX.4.2\x019=5\x0135=0\x0110=000\x01".to_vec(),
                Garbled::BeginString,
            ),
            (
                b"8=FIX.4.4\x019=99\x0135=0\x0110=000\x01".to_vec(),
                Garbled::Trailer,
            ),
            (
                b"8=FIX.4.4\x019=x\x0135=0\x0110=000\x01".to_vec(),
                Garbled::BodyLength,
            ),
            (
                b"8=FIX.4.4\x019=5\x0135=0\x01=1\x0110=000\x01".to_vec(),
                Garbled::Field,
            ),
        ] {
            assert_eq!(Message::parse(bytes).err(), Some(why));
        }
    }

    #[test]
    fn the_framer_cuts_messages_and_skips_garbage_to_the_next_one() {
        let first = wire("35=0|49=A|56=B|34=1|52=x|");
        let second = wire("35=1|49=A|56=B|34=2|52=x|112=t|");
        let mut stream = b"junk8=FIX.4.4\x019=zz\x01".to_vec();
        stream.extend_from_slice(&first);
        stream.extend_from_slice(&second);
        let mut framer = Framer::default();
        let mut messages = Vec::new();
        let mut garbled = 0;
        // Byte by byte: every split point of the stream is a place a read may end.
        for &b in &stream {
            framer.extend(&[b]);
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Frame::Message(bytes) => messages.push(Message::parse(bytes).unwrap()),
                    Frame::Garbled(_) => garbled += 1,
                }
            }
        }
        assert!(garbled >= 2, "the junk and the bad BodyLength were skipped");
        let types: Vec<_> = messages.iter().map(|m| m.msg_type().to_string()).collect();
        assert_eq!(types, ["0", "1"]);
        assert_eq!(messages[1].get(tag::TEST_REQ_ID), Some("t"));
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn a_body_length_past_the_bound_is_refused_before_anything_is_buffered_for_it() {
        let mut framer = Framer::default();
        framer.extend(b"8=FIX.4.4\x019=999999999\x01");
        assert!(matches!(
            framer.next_frame(),
            Some(Frame::Garbled(Garbled::BodyLength))
        ));
        framer.extend(b"8=FIX.4.4\x019=12345678901234567890");
        assert!(matches!(
            framer.next_frame(),
            Some(Frame::Garbled(Garbled::BodyLength))
        ));
    }

    #[test]
    fn timestamps_are_fix_utc_timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_290_263_123);
        assert_eq!(utc_timestamp(t), "20261203-09:31:03.123");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any bytes: the framer and the parser answer, never panic, and the framer's buffer
        /// stays bounded.
        #[test]
        fn random_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut framer = Framer::default();
            for chunk in chunks {
                framer.extend(&chunk);
                while let Some(frame) = framer.next_frame() {
                    if let Frame::Message(bytes) = frame {
                        let _ = Message::parse(bytes);
                    }
                }
                prop_assert!(framer.buffered() <= MESSAGE_BYTES_MAX + chunk.len());
            }
        }

        /// A valid message with one byte changed, dropped or repeated: garbled or another valid
        /// message, never a panic; and a valid message after it is still found.
        #[test]
        fn mutated_messages_never_panic_and_do_not_hide_the_next(at in 0usize..200, byte in any::<u8>(), kind in 0u8..3) {
            let good = Builder::new("D")
                .field(tag::CL_ORD_ID, "o-1")
                .field(tag::SYMBOL, "AAPL")
                .field(tag::PRICE, "100.25")
                .finish(&header());
            let mut bad = good.clone();
            let at = at % bad.len();
            match kind {
                0 => bad[at] = byte,
                1 => { bad.remove(at); }
                _ => bad.insert(at, byte),
            }
            let _ = Message::parse(bad.clone());
            let mut framer = Framer::default();
            framer.extend(&bad);
            framer.extend(&good);
            let mut found = 0;
            for _ in 0..64 {
                match framer.next_frame() {
                    Some(Frame::Message(bytes)) => {
                        if Message::parse(bytes).is_ok_and(|m| m.get(tag::CL_ORD_ID) == Some("o-1")) {
                            found += 1;
                        }
                    }
                    Some(Frame::Garbled(_)) => {}
                    None => break,
                }
            }
            prop_assert!(found >= 1, "the good message after a mutated one was lost");
        }
    }
}
