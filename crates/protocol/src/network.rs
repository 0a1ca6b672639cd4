//! CAIP-2 network identifiers (`namespace:reference`), as x402 v2 uses them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a CAIP-2 network id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CAIP-2 network id {0:?}: expected namespace:reference ([-a-z0-9]{{3,8}}:[-_a-zA-Z0-9]{{1,32}})")]
pub struct NetworkError(pub String);

/// A CAIP-2 chain id such as `solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(String);

impl Network {
    /// Solana mainnet-beta.
    pub const SOLANA_MAINNET: &'static str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
    /// Solana devnet.
    pub const SOLANA_DEVNET: &'static str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";

    /// Solana mainnet-beta.
    pub fn solana_mainnet() -> Self {
        Self(Self::SOLANA_MAINNET.to_owned())
    }

    /// Solana devnet.
    pub fn solana_devnet() -> Self {
        Self(Self::SOLANA_DEVNET.to_owned())
    }

    /// The id of a Solana cluster: `solana:` + the first 32 characters of its base58 genesis hash.
    pub fn solana_from_genesis_hash(genesis_hash: &str) -> Result<Self, NetworkError> {
        let reference: String = genesis_hash.chars().take(32).collect();
        format!("solana:{reference}").parse()
    }

    /// The namespace part (`solana`, `eip155`).
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    /// The reference part (the chain within the namespace).
    pub fn reference(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, r)| r)
    }

    /// Whether this is a Solana cluster.
    pub fn is_solana(&self) -> bool {
        self.namespace() == "solana"
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Network {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.split_once(':').is_some_and(|(ns, reference)| {
            (3..=8).contains(&ns.len())
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && (1..=32).contains(&reference.len())
                && reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(NetworkError(s.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_solana_ids_parse() {
        let main: Network = Network::SOLANA_MAINNET
            .parse()
            .expect("mainnet id is valid");
        assert!(main.is_solana());
        assert_eq!(main.reference(), "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
        assert_eq!(Network::solana_devnet().namespace(), "solana");
        assert!("eip155:8453".parse::<Network>().is_ok());
    }

    #[test]
    fn localnet_id_is_the_first_32_characters_of_the_genesis_hash() {
        let id = Network::solana_from_genesis_hash("5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d")
            .expect("valid genesis hash");
        assert_eq!(id, Network::solana_mainnet());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "solana",
            ":abc",
            "so:abc",
            "Solana:abc",
            "solana:",
            "solana:a b",
            "solana:é",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?} was accepted");
        }
        assert!(format!("solana:{}", "a".repeat(33))
            .parse::<Network>()
            .is_err());
    }
}
