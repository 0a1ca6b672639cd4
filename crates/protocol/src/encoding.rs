//! Wire encodings of the primitive values: base58 keys and signatures, hex hashes and ids, and
//! amounts as decimal strings of atomic units.
//!
//! Each type parses strictly (exact length, canonical alphabet) and serialises to exactly one
//! string, so a value read off the wire re-encodes to the same text.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a primitive wire value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// Not valid base58.
    #[error("invalid base58: {0}")]
    Base58(String),
    /// Not valid lowercase hex.
    #[error("invalid hex: {0}")]
    Hex(String),
    /// Decoded to the wrong number of bytes.
    #[error("expected {expected} bytes, got {actual}")]
    Length {
        /// Required byte length.
        expected: usize,
        /// Decoded byte length.
        actual: usize,
    },
    /// Not a decimal string of atomic units that fits in a u64.
    #[error(
        "invalid amount {0:?}: expected a canonical decimal string of atomic units (no leading \
         zero) that fits in u64"
    )]
    Amount(String),
}

fn decode_b58<const N: usize>(s: &str) -> Result<[u8; N], EncodingError> {
    // A base58 string of N bytes is at most ~1.37 N characters: refuse giant input early.
    if s.len() > N.saturating_mul(2) {
        return Err(EncodingError::Length {
            expected: N,
            actual: s.len(),
        });
    }
    let bytes = bs58::decode(s)
        .into_vec()
        .map_err(|e| EncodingError::Base58(e.to_string()))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| EncodingError::Length {
        expected: N,
        actual: bytes.len(),
    })
}

fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], EncodingError> {
    if s.len() != N.saturating_mul(2) {
        return Err(EncodingError::Length {
            expected: N,
            actual: s.len() / 2,
        });
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(EncodingError::Hex("uppercase hex is not canonical".into()));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| EncodingError::Hex(e.to_string()))?;
    Ok(out)
}

/// Implements Display/FromStr/Serialize/Deserialize for a byte-array newtype through the given
/// text codec, so every such type has exactly one text form.
macro_rules! text_newtype {
    ($name:ident, $len:expr, $encode:expr, $decode:ident, $expecting:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let encode: fn(&[u8; $len]) -> String = $encode;
                f.write_str(&encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = EncodingError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $decode::<$len>(s).map(Self)
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl From<$name> for [u8; $len] {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}

/// Base58 of 32 bytes. `five8` (the fixed-size encoder Solana uses) gives the same text as
/// `bs58` several times faster; keys are encoded a few times per paid request.
fn encode_b58_32(bytes: &[u8; 32]) -> String {
    let mut out = [0u8; five8::BASE58_ENCODED_32_MAX_LEN];
    let len = usize::from(five8::encode_32(bytes, &mut out));
    out.get(..len)
        .and_then(|text| std::str::from_utf8(text).ok())
        .map_or_else(|| bs58::encode(bytes).into_string(), str::to_owned)
}

/// Base58 of 64 bytes, like [`encode_b58_32`].
fn encode_b58_64(bytes: &[u8; 64]) -> String {
    let mut out = [0u8; five8::BASE58_ENCODED_64_MAX_LEN];
    let len = usize::from(five8::encode_64(bytes, &mut out));
    out.get(..len)
        .and_then(|text| std::str::from_utf8(text).ok())
        .map_or_else(|| bs58::encode(bytes).into_string(), str::to_owned)
}

/// An ed25519 public key / Solana address, base58 on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pubkey(pub [u8; 32]);
text_newtype!(
    Pubkey,
    32,
    encode_b58_32,
    decode_b58,
    "a base58 32-byte key"
);

impl Pubkey {
    /// The key's 32 bytes.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

/// An ed25519 signature, base58 on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);
text_newtype!(
    Signature,
    64,
    encode_b58_64,
    decode_b58,
    "a base58 64-byte signature"
);

impl Signature {
    /// The signature's 64 bytes.
    pub const fn to_bytes(self) -> [u8; 64] {
        self.0
    }
}

/// A SHA-256 digest, lowercase hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);
text_newtype!(
    Hash32,
    32,
    |b| hex::encode(b),
    decode_hex,
    "a 64-character lowercase hex sha256 digest"
);

impl Hash32 {
    /// The all-zero hash, used as the previous hash of a session's first receipt.
    pub const ZERO: Self = Self([0; 32]);

    /// The digest's 32 bytes.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

/// A 16-byte random identifier (offer and intent ids), lowercase hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id16(pub [u8; 16]);
text_newtype!(
    Id16,
    16,
    |b| hex::encode(b),
    decode_hex,
    "a 32-character lowercase hex id"
);

impl Id16 {
    /// A fresh identifier from the operating system's random source.
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self(id)
    }
}

/// An amount of atomic token units; a decimal string on the wire (`"1000"`).
///
/// Only canonical decimal is accepted: ASCII digits, no leading zero unless the amount is `"0"`
/// (no sign, no spaces, no exponent), and the value must fit in a u64, which is what SPL token
/// amounts are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Amount(pub u64);

impl Amount {
    /// Zero atomic units.
    pub const ZERO: Self = Self(0);

    /// The amount in atomic units.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

impl FromStr for Amount {
    type Err = EncodingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Canonical decimal only: "0", or digits without a leading zero (so "02000" and "2000"
        // are not two spellings of one amount).
        if s.is_empty()
            || s.len() > 20
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(EncodingError::Amount(s.chars().take(32).collect()));
        }
        s.parse::<u64>()
            .map(Self)
            .map_err(|_| EncodingError::Amount(s.to_owned()))
    }
}

impl From<u64> for Amount {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string of atomic units")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubkey_round_trips_through_base58() {
        let key = Pubkey([7; 32]);
        let text = key.to_string();
        assert_eq!(text.parse::<Pubkey>(), Ok(key));
        assert_eq!(
            serde_json::to_string(&key).ok(),
            Some(format!("\"{text}\""))
        );
    }

    #[test]
    fn base58_of_the_wrong_length_is_rejected() {
        let short = bs58::encode([1u8; 31]).into_string();
        assert_eq!(
            short.parse::<Pubkey>(),
            Err(EncodingError::Length {
                expected: 32,
                actual: 31
            })
        );
        assert!(matches!(
            "0OIl".parse::<Pubkey>(),
            Err(EncodingError::Base58(_))
        ));
        assert!("1".repeat(500).parse::<Pubkey>().is_err());
    }

    #[test]
    fn hex_must_be_lowercase_and_exact() {
        let hash = Hash32([0xab; 32]);
        assert_eq!(hash.to_string().parse::<Hash32>(), Ok(hash));
        assert!(hash.to_string().to_uppercase().parse::<Hash32>().is_err());
        assert!("abcd".parse::<Hash32>().is_err());
        assert!("zz".repeat(32).parse::<Hash32>().is_err());
    }

    #[test]
    fn amounts_are_digits_only_and_fit_u64() {
        assert_eq!("0".parse::<Amount>(), Ok(Amount(0)));
        assert_eq!(
            "18446744073709551615".parse::<Amount>(),
            Ok(Amount(u64::MAX))
        );
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "1e3",
            "18446744073709551616",
            "0x10",
            "１",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} was accepted");
        }
        assert!(
            serde_json::from_str::<Amount>("1000").is_err(),
            "numbers must be strings"
        );
    }

    #[test]
    fn amounts_with_leading_zeros_are_refused_so_each_amount_has_one_text_form() {
        for bad in [
            "00",
            "01",
            "02000",
            "000000000000000001000",
            "0018446744073709551615",
        ] {
            assert_eq!(
                bad.parse::<Amount>(),
                Err(EncodingError::Amount(bad.to_owned())),
                "{bad:?} was accepted"
            );
            assert!(
                serde_json::from_str::<Amount>(&format!("\"{bad}\"")).is_err(),
                "{bad:?} was accepted in JSON"
            );
        }
        for good in ["0", "1", "10", "2000", "18446744073709551615"] {
            let amount: Amount = good.parse().unwrap_or_default();
            assert_eq!(amount.to_string(), good, "{good:?} does not round-trip");
        }
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(Id16::random(), Id16::random());
    }
}

#[cfg(test)]
mod base58_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_fast_base58_encoder_writes_what_bs58_writes(
            key in proptest::array::uniform32(any::<u8>()),
            zeros in 0usize..32,
            sig in proptest::collection::vec(any::<u8>(), 64),
        ) {
            let mut key = key;
            key.iter_mut().take(zeros).for_each(|b| *b = 0);
            prop_assert_eq!(super::encode_b58_32(&key), bs58::encode(key).into_string());
            let sig: [u8; 64] = sig.try_into().unwrap_or([0; 64]);
            prop_assert_eq!(super::encode_b58_64(&sig), bs58::encode(sig).into_string());
        }
    }

    #[test]
    fn all_zero_and_all_ones_keys_encode_like_bs58() {
        for bytes in [[0u8; 32], [255u8; 32]] {
            assert_eq!(
                super::encode_b58_32(&bytes),
                bs58::encode(bytes).into_string()
            );
        }
        for bytes in [[0u8; 64], [255u8; 64]] {
            assert_eq!(
                super::encode_b58_64(&bytes),
                bs58::encode(bytes).into_string()
            );
        }
    }
}
