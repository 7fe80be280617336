//! ClOrdID(11), the broker's text, and the engine's client order id, a 64-bit integer: a
//! mapping that is a function of the text alone (so every node, and a new leader, maps a
//! resent ClOrdID to the same id, and the engine's exactly-once window catches the resend) and
//! that can be undone (so every ExecutionReport carries the broker's ClOrdID back, whichever
//! node sends it).
//!
//! Two forms share the 64 bits. A ClOrdID of decimal digits without a leading zero, up to
//! 2^63 - 1, is the number itself (top bit clear): the common case of a counter or a
//! timestamp. Any other ClOrdID of 1 to 10 characters from `- 0-9 A-Z _ a-z` is a numeral in
//! base 65, first character most significant, one digit per character (each 1 to 64, so the
//! length is implied), with the top bit set. The engine's exactly-once window wants a broker's
//! ids to rise (`exchange_engine::CLIENT_ORDER_ID_WINDOW`); this order keeps the usual ways of
//! making ClOrdIDs rising: a number that counts, and a fixed prefix followed by a counter
//! ("ORD-9" < "ORD-10": a longer text is always the larger, and characters compare in ASCII
//! order). Anything else is refused with a reason the broker can act on.

use exchange_domain::ClientOrderId;

/// The longest ClOrdID that is not a plain number.
pub const PACKED_CHARS_MAX: usize = 10;

/// In ASCII order, so that texts of one length compare as their ids do.
const ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
const PACKED: u64 = 1 << 63;

/// Why a ClOrdID cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable(pub String);

/// The engine's client order id for a ClOrdID.
pub fn to_client_order_id(text: &str) -> Result<ClientOrderId, Unusable> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(Unusable("ClOrdID(11) is empty".into()));
    }
    if bytes[0] != b'0' && bytes.len() <= 19 && bytes.iter().all(u8::is_ascii_digit) {
        if let Ok(n) = text.parse::<u64>() {
            if n < PACKED {
                return Ok(ClientOrderId(n));
            }
        }
    }
    if bytes.len() > PACKED_CHARS_MAX {
        return Err(Unusable(format!(
            "ClOrdID(11) {text:?} is neither a number below 2^63 nor at most {PACKED_CHARS_MAX} \
             characters of 0-9, A-Z, a-z, '-' and '_'"
        )));
    }
    let mut value = 0u64;
    for &b in bytes {
        let digit = ALPHABET.iter().position(|&a| a == b).ok_or_else(|| {
            Unusable(format!(
                "ClOrdID(11) {text:?} holds {:?}: a ClOrdID that is not a number may use only \
                 0-9, A-Z, a-z, '-' and '_'",
                b as char
            ))
        })?;
        value = value * 65 + digit as u64 + 1;
    }
    Ok(ClientOrderId(value | PACKED))
}

/// The ClOrdID a client order id came from (any id: one entered over the native protocol is
/// shown as its number).
pub fn to_text(id: ClientOrderId) -> String {
    if id.0 & PACKED == 0 {
        return id.0.to_string();
    }
    let mut value = id.0 & !PACKED;
    let mut reversed = Vec::with_capacity(PACKED_CHARS_MAX);
    while value > 0 {
        let digit = value % 65;
        if digit == 0 || reversed.len() == PACKED_CHARS_MAX {
            // Not an id this mapping made (a native client's large number): show the number.
            return id.0.to_string();
        }
        reversed.push(ALPHABET[digit as usize - 1]);
        value /= 65;
    }
    reversed.iter().rev().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_themselves_and_text_is_packed() {
        assert_eq!(to_client_order_id("42"), Ok(ClientOrderId(42)));
        assert_eq!(to_text(ClientOrderId(42)), "42");
        for text in [
            "007",
            "0",
            "ord-1",
            "A",
            "_",
            "zzzzzzzzzz",
            "9223372036854775808",
        ] {
            if text.len() > PACKED_CHARS_MAX {
                assert!(to_client_order_id(text).is_err(), "{text}");
                continue;
            }
            let id = to_client_order_id(text).unwrap();
            assert!(id.0 & PACKED != 0, "{text} is packed");
            assert_eq!(to_text(id), text);
        }
        assert!(to_client_order_id("").is_err());
        assert!(to_client_order_id("a b").is_err());
        assert!(to_client_order_id("01234567890").is_err());
    }

    #[test]
    fn a_prefix_and_a_counter_rise() {
        let ids: Vec<u64> = ["ORD-8", "ORD-9", "ORD-10", "ORD-11", "ORD-99", "ORD-100"]
            .iter()
            .map(|t| to_client_order_id(t).unwrap().0)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(to_client_order_id("9223372036854775807").unwrap().0 < ids[0]);
    }

    proptest! {
        #[test]
        fn texts_of_one_length_compare_as_their_ids(a in "[0-9A-Za-z_-]{6}", b in "[0-9A-Za-z_-]{6}") {
            prop_assume!(a.bytes().any(|c| !c.is_ascii_digit()) && b.bytes().any(|c| !c.is_ascii_digit()));
            let (ia, ib) = (to_client_order_id(&a).unwrap(), to_client_order_id(&b).unwrap());
            prop_assert_eq!(a.cmp(&b), ia.0.cmp(&ib.0));
        }

        #[test]
        fn packed_text_comes_back_and_two_texts_never_share_an_id(
            a in "[0-9A-Za-z_-]{1,10}", b in "[0-9A-Za-z_-]{1,10}"
        ) {
            let (ia, ib) = (to_client_order_id(&a).unwrap(), to_client_order_id(&b).unwrap());
            prop_assert_eq!(to_text(ia), a.clone());
            prop_assert_eq!(ia == ib, a == b);
        }

        #[test]
        fn numbers_come_back(n in 1u64..(1 << 63)) {
            let id = to_client_order_id(&n.to_string()).unwrap();
            prop_assert_eq!(id, ClientOrderId(n));
            prop_assert_eq!(to_text(id), n.to_string());
        }
    }
}
