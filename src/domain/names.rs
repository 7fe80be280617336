//! Names and decimal scales: how people write instruments, assets and prices.
//!
//! Inside the exchange every price and quantity is an integer and every symbol and asset a
//! number. At the edges (the CLI, reports, market data, FIX, the web) people read and type
//! names ("AAPL", "USD") and decimal prices ("100.50"). A symbol carries its name and the
//! number of decimals of its prices; an asset its name and the decimals of its amounts. The
//! conversions here are exact: a decimal with more digits than the scale is refused, never
//! rounded.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name, in bytes.
pub const NAME_BYTES_MAX: usize = 15;
/// The most decimals a price or an amount may have: 10^18 still fits an i64.
pub const DECIMALS_MAX: u8 = 18;

/// An instrument's or an asset's name: 1 to 15 characters (15 keeps a symbol's description
/// within the size of a new order in the log), a letter first, then letters,
/// digits and `.`, `-`, `_`, `/`. A name never reads as a number, so a CLI argument is a name
/// or an id without ambiguity. Stored zero-padded, so it stays `Copy` and fixed-size in the
/// log.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq))]
pub struct Name(pub [u8; NAME_BYTES_MAX]);

/// Why a text is not a [`Name`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { len: usize },
    NotALetterFirst,
    BadCharacter(char),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "a name cannot be empty"),
            NameError::TooLong { len } => {
                write!(
                    f,
                    "a name has at most {NAME_BYTES_MAX} characters, not {len}"
                )
            }
            NameError::NotALetterFirst => write!(f, "a name starts with a letter"),
            NameError::BadCharacter(c) => write!(
                f,
                "a name holds letters, digits and . - _ / only, not {c:?}"
            ),
        }
    }
}

impl std::error::Error for NameError {}

impl Name {
    pub fn new(text: &str) -> Result<Name, NameError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > NAME_BYTES_MAX {
            return Err(NameError::TooLong { len: text.len() });
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))
        {
            return Err(NameError::BadCharacter(c));
        }
        if !bytes[0].is_ascii_alphabetic() {
            return Err(NameError::NotALetterFirst);
        }
        let mut name = [0u8; NAME_BYTES_MAX];
        name[..bytes.len()].copy_from_slice(bytes);
        Ok(Name(name))
    }

    /// `prefix` and a number ("SYM900"), for names that tools and tests make up. Panics on a
    /// prefix that does not start with a letter or is too long for the number: a bug.
    pub fn numbered(prefix: &str, number: u64) -> Name {
        Name::new(&format!("{prefix}{number}")).expect("a letter prefix short enough")
    }

    /// Whether the bytes are a name [`Name::new`] would make (a name decoded from the log or
    /// the wire is checked before the engine trusts it).
    pub fn is_valid(&self) -> bool {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NAME_BYTES_MAX);
        self.0[len..].iter().all(|&b| b == 0)
            && std::str::from_utf8(&self.0[..len])
                .ok()
                .is_some_and(|text| Name::new(text).is_ok())
    }

    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NAME_BYTES_MAX);
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Name, NameError> {
        Name::new(text)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Name::new(&text).map_err(serde::de::Error::custom)
    }
}

/// The longest FIX CompID a broker may be given, in bytes.
pub const COMP_ID_BYTES_MAX: usize = 32;

/// A broker's FIX SenderCompID: 1 to 32 printable ASCII characters without `=`, and not
/// `EXCHANGE` (the exchange's own). Replicated (an admin command sets it), so stored
/// zero-padded and `Copy` like [`Name`].
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq))]
pub struct CompId(pub [u8; COMP_ID_BYTES_MAX]);

/// The exchange's own CompID (every session's TargetCompID).
pub const EXCHANGE_COMP_ID: &str = "EXCHANGE";

/// Why a text is not a [`CompId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompIdError {
    Length(usize),
    BadCharacter(char),
    TheExchanges,
}

impl std::fmt::Display for CompIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompIdError::Length(len) => write!(
                f,
                "a CompID has 1 to {COMP_ID_BYTES_MAX} characters, not {len}"
            ),
            CompIdError::BadCharacter(c) => write!(
                f,
                "a CompID holds printable ASCII characters other than '=' only, not {c:?}"
            ),
            CompIdError::TheExchanges => {
                write!(f, "{EXCHANGE_COMP_ID} is the exchange's own CompID")
            }
        }
    }
}

impl std::error::Error for CompIdError {}

impl CompId {
    pub fn new(text: &str) -> Result<CompId, CompIdError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > COMP_ID_BYTES_MAX {
            return Err(CompIdError::Length(text.chars().count()));
        }
        if let Some(c) = text.chars().find(|&c| !c.is_ascii_graphic() || c == '=') {
            return Err(CompIdError::BadCharacter(c));
        }
        if text == EXCHANGE_COMP_ID {
            return Err(CompIdError::TheExchanges);
        }
        let mut id = [0u8; COMP_ID_BYTES_MAX];
        id[..bytes.len()].copy_from_slice(bytes);
        Ok(CompId(id))
    }

    /// Whether the bytes are a CompID [`CompId::new`] would make (one decoded from the log is
    /// checked before the engine trusts it).
    pub fn is_valid(&self) -> bool {
        let len = self.len();
        self.0[len..].iter().all(|&b| b == 0)
            && std::str::from_utf8(&self.0[..len])
                .ok()
                .is_some_and(|text| CompId::new(text).is_ok())
    }

    fn len(&self) -> usize {
        self.0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(COMP_ID_BYTES_MAX)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..self.len()]).unwrap_or("?")
    }
}

impl std::str::FromStr for CompId {
    type Err = CompIdError;
    fn from_str(text: &str) -> Result<CompId, CompIdError> {
        CompId::new(text)
    }
}

impl std::fmt::Display for CompId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CompId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for CompId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CompId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CompId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        CompId::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a text is not a decimal on a given scale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecimalError {
    NotANumber(String),
    /// More digits after the point than the scale has.
    TooPrecise {
        text: String,
        decimals: u8,
    },
    OutOfRange(String),
    ScaleTooLarge(u8),
}

impl std::fmt::Display for DecimalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecimalError::NotANumber(text) => write!(f, "{text:?} is not a decimal number"),
            DecimalError::TooPrecise { text, decimals } => write!(
                f,
                "{text:?} has more than {decimals} digits after the point"
            ),
            DecimalError::OutOfRange(text) => write!(f, "{text:?} is out of range"),
            DecimalError::ScaleTooLarge(decimals) => {
                write!(f, "{decimals} decimals: at most {DECIMALS_MAX}")
            }
        }
    }
}

impl std::error::Error for DecimalError {}

/// `text` ("100.5", "-3", "0.25") as an integer count of 10^-`decimals` units: "100.5" with 2
/// decimals is 10050. Exact: refuses what the scale cannot hold.
pub fn parse_decimal(text: &str, decimals: u8) -> Result<i64, DecimalError> {
    if decimals > DECIMALS_MAX {
        return Err(DecimalError::ScaleTooLarge(decimals));
    }
    let not_a_number = || DecimalError::NotANumber(text.to_string());
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (unsigned.contains('.') && fraction.is_empty() && whole.is_empty())
    {
        return Err(not_a_number());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return Err(DecimalError::TooPrecise {
            text: text.to_string(),
            decimals,
        });
    }
    let out_of_range = || DecimalError::OutOfRange(text.to_string());
    let mut value: i128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        value = value * 10 + i128::from(digit - b'0');
        if value > i128::from(i64::MAX) {
            return Err(out_of_range());
        }
    }
    value *= 10i128.pow(u32::from(decimals) - fraction.len() as u32);
    if negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| out_of_range())
}

/// `value` counted in 10^-`decimals` units, as a decimal with exactly `decimals` digits after
/// the point: 10050 with 2 decimals is "100.50".
pub fn format_decimal(value: i64, decimals: u8) -> String {
    if decimals == 0 {
        return value.to_string();
    }
    let decimals = u32::from(decimals.min(DECIMALS_MAX));
    let scale = 10u64.pow(decimals);
    let magnitude = value.unsigned_abs();
    format!(
        "{}{}.{:0width$}",
        if value < 0 { "-" } else { "" },
        magnitude / scale,
        magnitude % scale,
        width = decimals as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(Name::new("AAPL").unwrap().as_str(), "AAPL");
        assert_eq!(Name::new("BTC-USD").unwrap().to_string(), "BTC-USD");
        assert_eq!(Name::new("ABCDEFGHIJKLMNO").unwrap().as_str().len(), 15);
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("1AB"), Err(NameError::NotALetterFirst));
        assert_eq!(Name::new("A B"), Err(NameError::BadCharacter(' ')));
        assert_eq!(Name::new("Aé"), Err(NameError::BadCharacter('é')));
        assert!(matches!(
            Name::new("ABCDEFGHIJKLMNOP"),
            Err(NameError::TooLong { .. })
        ));
        assert!(Name::new("X").unwrap().is_valid());
        assert!(!Name([0; NAME_BYTES_MAX]).is_valid());
        let mut gap = Name::new("AB").unwrap();
        gap.0[3] = b'C';
        assert!(!gap.is_valid(), "bytes after the end must be zero");
    }

    #[test]
    fn comp_ids_are_checked() {
        assert_eq!(CompId::new("BROKER1").unwrap().as_str(), "BROKER1");
        let longest = "X".repeat(COMP_ID_BYTES_MAX);
        assert_eq!(CompId::new(&longest).unwrap().as_str(), longest);
        assert!(CompId::new("BROKER1").unwrap().is_valid());
        assert_eq!(
            CompId::new(&"X".repeat(COMP_ID_BYTES_MAX + 1)),
            Err(CompIdError::Length(COMP_ID_BYTES_MAX + 1))
        );
        assert_eq!(CompId::new(""), Err(CompIdError::Length(0)));
        assert_eq!(CompId::new("A B"), Err(CompIdError::BadCharacter(' ')));
        assert_eq!(CompId::new("A=B"), Err(CompIdError::BadCharacter('=')));
        assert_eq!(
            CompId::new("\u{1}"),
            Err(CompIdError::BadCharacter('\u{1}'))
        );
        assert_eq!(CompId::new("EXCHANGE"), Err(CompIdError::TheExchanges));
        let mut holed = CompId::new("AB").unwrap();
        holed.0[4] = b'C';
        assert!(!holed.is_valid(), "bytes after the end");
    }

    #[test]
    fn names_serialize_as_text() {
        let name = Name::new("AAPL").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"AAPL\"");
        assert_eq!(serde_json::from_str::<Name>("\"AAPL\"").unwrap(), name);
        assert!(serde_json::from_str::<Name>("\"9X\"").is_err());
        let bytes = postcard::to_allocvec(&name).unwrap();
        assert_eq!(postcard::from_bytes::<Name>(&bytes).unwrap(), name);
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("100.50", 2), Ok(10050));
        assert_eq!(parse_decimal("100.5", 2), Ok(10050));
        assert_eq!(parse_decimal("100", 2), Ok(10000));
        assert_eq!(parse_decimal(".25", 2), Ok(25));
        assert_eq!(parse_decimal("7.", 1), Ok(70));
        assert_eq!(parse_decimal("-1.5", 2), Ok(-150));
        assert_eq!(parse_decimal("+3", 0), Ok(3));
        assert_eq!(parse_decimal("1.500", 1), Ok(15));
        assert!(matches!(
            parse_decimal("100.505", 2),
            Err(DecimalError::TooPrecise { .. })
        ));
        for bad in ["", "-", ".", "1..2", "1,5", "abc", "1e3", " 1", "--1"] {
            assert!(
                matches!(parse_decimal(bad, 2), Err(DecimalError::NotANumber(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_decimal("92233720368547758.08", 2),
            Err(DecimalError::OutOfRange(_))
        ));
        assert_eq!(parse_decimal("92233720368547758.07", 2), Ok(i64::MAX));
        assert_eq!(parse_decimal("1", 19), Err(DecimalError::ScaleTooLarge(19)));
    }

    #[test]
    fn decimals_format_and_round_trip() {
        assert_eq!(format_decimal(10050, 2), "100.50");
        assert_eq!(format_decimal(5, 2), "0.05");
        assert_eq!(format_decimal(-150, 2), "-1.50");
        assert_eq!(format_decimal(42, 0), "42");
        assert_eq!(format_decimal(i64::MIN, 2), "-92233720368547758.08");
        for (value, decimals) in [(0, 3), (1, 4), (-99, 1), (i64::MAX, 18), (i64::MIN + 1, 6)] {
            let text = format_decimal(value, decimals);
            assert_eq!(parse_decimal(&text, decimals), Ok(value), "{text}");
        }
    }
}
