//! Where things live by default: the wallet at `~/.config/solana/id.json` (the Solana CLI's
//! default keypair) and the agent's store in the user's data directory
//! (`$XDG_DATA_HOME/x402pp/agent`, else `~/.local/share/x402pp/agent`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The default keypair, relative to the home directory (as the Solana CLI has it).
pub const DEFAULT_KEYPAIR: &str = ".config/solana/id.json";
/// The keypair variable of earlier versions, still read after `X402PP_KEYPAIR`.
pub const LEGACY_KEYPAIR_ENV: &str = "X402PP_AGENT_KEYPAIR";

/// Why no path could be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing given and no default keypair file.
    #[error("no keypair at {0}; create one with `x402pp keygen` or pass -k FILE")]
    NoDefaultKeypair(String),
    /// Neither `HOME` nor a flag to replace it.
    #[error("no home directory (HOME is not set): pass {0}")]
    NoHome(&'static str),
}

/// The environment the defaults are read from (the process's, or a map in tests).
pub trait Env {
    /// The variable's value, `None` when unset or empty.
    fn var(&self, name: &str) -> Option<OsString>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name).filter(|value| !value.is_empty())
    }
}

fn home(env: &impl Env) -> Option<PathBuf> {
    env.var("HOME")
        .or_else(|| env.var("USERPROFILE"))
        .map(PathBuf::from)
}

/// `~/.config/solana/id.json`.
pub fn default_keypair(env: &impl Env) -> Option<PathBuf> {
    home(env).map(|home| home.join(DEFAULT_KEYPAIR))
}

/// `$XDG_DATA_HOME/x402pp/agent` (an absolute `XDG_DATA_HOME` only, as the XDG spec says),
/// else `~/.local/share/x402pp/agent`.
pub fn default_store(env: &impl Env) -> Option<PathBuf> {
    let data = env
        .var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| home(env).map(|home| home.join(".local").join("share")))?;
    Some(data.join("x402pp").join("agent"))
}

/// The store: `--store` / `X402PP_AGENT_STORE` when given, else [`default_store`].
pub fn store(given: Option<&Path>, env: &impl Env) -> Result<PathBuf, PathError> {
    match given {
        Some(path) => Ok(path.to_owned()),
        None => default_store(env).ok_or(PathError::NoHome("--store DIR")),
    }
}

/// The keypair file: `-k` / `X402PP_KEYPAIR` when given, else `X402PP_AGENT_KEYPAIR`, else
/// `~/.config/solana/id.json`, which must exist (a clear error says how to create it). A given
/// path is returned as is: reading it reports its own errors.
pub fn keypair(given: Option<&Path>, env: &impl Env) -> Result<PathBuf, PathError> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    if let Some(path) = env.var(LEGACY_KEYPAIR_ENV) {
        return Ok(PathBuf::from(path));
    }
    let path = default_keypair(env).ok_or(PathError::NoHome("-k FILE"))?;
    if path.exists() {
        Ok(path)
    } else {
        Err(PathError::NoDefaultKeypair(path.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct MapEnv(HashMap<&'static str, &'static str>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<OsString> {
            self.0
                .get(name)
                .filter(|v| !v.is_empty())
                .map(OsString::from)
        }
    }

    fn env(pairs: &[(&'static str, &'static str)]) -> MapEnv {
        MapEnv(pairs.iter().copied().collect())
    }

    #[test]
    fn the_default_keypair_is_the_solana_clis() {
        assert_eq!(
            default_keypair(&env(&[("HOME", "/home/ada")])),
            Some(PathBuf::from("/home/ada/.config/solana/id.json"))
        );
        assert_eq!(default_keypair(&env(&[])), None);
    }

    #[test]
    fn a_missing_default_keypair_says_how_to_make_one() {
        let error = keypair(None, &env(&[("HOME", "/nonexistent/x402pp-home")])).err();
        assert_eq!(
            error,
            Some(PathError::NoDefaultKeypair(
                "/nonexistent/x402pp-home/.config/solana/id.json".into()
            ))
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("x402pp keygen") && message.contains("-k"),
            "{message}"
        );
        assert_eq!(
            keypair(None, &env(&[])).err(),
            Some(PathError::NoHome("-k FILE"))
        );
    }

    #[test]
    fn a_given_keypair_wins_over_the_legacy_variable_and_the_default() {
        let legacy = env(&[("HOME", "/h"), (LEGACY_KEYPAIR_ENV, "/old/agent.json")]);
        assert_eq!(
            keypair(Some(Path::new("k.json")), &legacy),
            Ok(PathBuf::from("k.json"))
        );
        assert_eq!(keypair(None, &legacy), Ok(PathBuf::from("/old/agent.json")));
    }

    #[test]
    fn the_store_lives_in_the_users_data_directory() {
        assert_eq!(
            default_store(&env(&[("HOME", "/home/ada")])),
            Some(PathBuf::from("/home/ada/.local/share/x402pp/agent"))
        );
        assert_eq!(
            default_store(&env(&[("HOME", "/home/ada"), ("XDG_DATA_HOME", "/data")])),
            Some(PathBuf::from("/data/x402pp/agent"))
        );
        // A relative XDG_DATA_HOME is invalid per the spec and ignored.
        assert_eq!(
            default_store(&env(&[("HOME", "/home/ada"), ("XDG_DATA_HOME", "rel")])),
            Some(PathBuf::from("/home/ada/.local/share/x402pp/agent"))
        );
        assert_eq!(
            store(Some(Path::new("here")), &env(&[])),
            Ok(PathBuf::from("here"))
        );
        assert_eq!(
            store(None, &env(&[])),
            Err(PathError::NoHome("--store DIR"))
        );
    }
}
