//! `-u/--url` as the Solana CLI takes it: a moniker (`mainnet-beta`/`m`, `devnet`/`d`,
//! `testnet`/`t`, `localhost`/`l`) or an `http(s)://` JSON-RPC URL.

/// Where `localhost`/`l` points: the localnet's default port. An IPv4 literal rather than
/// `localhost`, because the localnet listens on 127.0.0.1 only.
pub const LOCALHOST_URL: &str = "http://127.0.0.1:8899";

/// Public RPC endpoints of the monikers, as the Solana CLI resolves them.
pub const MONIKERS: [(&str, &str, &str); 4] = [
    ("mainnet-beta", "m", "https://api.mainnet-beta.solana.com"),
    ("devnet", "d", "https://api.devnet.solana.com"),
    ("testnet", "t", "https://api.testnet.solana.com"),
    ("localhost", "l", LOCALHOST_URL),
];

/// A `-u` value that is neither a moniker nor an http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a cluster: give an http(s):// RPC URL or one of mainnet-beta (m), devnet (d), \
     testnet (t), localhost (l)"
)]
pub struct UnknownCluster(pub String);

/// The JSON-RPC URL of a moniker or URL (clap's value parser for `-u`).
pub fn resolve_url(input: &str) -> Result<String, UnknownCluster> {
    let text = input.trim();
    if let Some((_, _, url)) = MONIKERS
        .iter()
        .find(|(name, short, _)| text == *name || text == *short)
    {
        return Ok((*url).to_owned());
    }
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err(UnknownCluster(input.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monikers_resolve_like_the_solana_cli() {
        for (input, url) in [
            ("mainnet-beta", "https://api.mainnet-beta.solana.com"),
            ("m", "https://api.mainnet-beta.solana.com"),
            ("devnet", "https://api.devnet.solana.com"),
            ("d", "https://api.devnet.solana.com"),
            ("testnet", "https://api.testnet.solana.com"),
            ("t", "https://api.testnet.solana.com"),
            ("localhost", "http://127.0.0.1:8899"),
            ("l", "http://127.0.0.1:8899"),
        ] {
            assert_eq!(resolve_url(input).as_deref(), Ok(url), "{input}");
        }
    }

    #[test]
    fn urls_pass_through_unchanged() {
        for url in [
            "http://127.0.0.1:18899",
            "https://rpc.example.com/v1/key",
            "http://[::1]:8899",
        ] {
            assert_eq!(resolve_url(url).as_deref(), Ok(url));
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_monikers_listed() {
        for bad in [
            "mainnet",
            "x",
            "ftp://host",
            "127.0.0.1:8899",
            "",
            "http://",
        ] {
            let error = resolve_url(bad).err();
            assert_eq!(error, Some(UnknownCluster(bad.into())), "{bad:?}");
        }
        let message = UnknownCluster("mainnet".into()).to_string();
        assert!(message.contains("devnet (d)"), "{message}");
    }
}
