//! Keypair files in the Solana CLI format (a JSON array of the 64 secret+public bytes).
//!
//! Keys come from files (or a path in an environment variable), never from code. Reading a file
//! that group or others may read logs a warning; writing one creates it with mode 0600.

use std::path::Path;

use solana_sdk::signature::Keypair;

/// Why a keypair file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("keypair file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a JSON array of 64 bytes forming a valid keypair.
    #[error("keypair file {path} is not a Solana keypair (a JSON array of 64 bytes)")]
    Format {
        /// The path.
        path: String,
    },
}

/// Reads a keypair file, warning when its permissions let others read it.
pub fn read_keypair(path: impl AsRef<Path>) -> Result<Keypair, KeyError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: shown.clone(),
        source,
    })?;
    warn_if_exposed(path);
    let bytes: Vec<u8> = serde_json::from_str(&text).map_err(|_| KeyError::Format {
        path: shown.clone(),
    })?;
    Keypair::try_from(bytes.as_slice()).map_err(|_| KeyError::Format { path: shown })
}

/// Writes `keypair` to `path` with owner-only permissions.
pub fn write_keypair(keypair: &Keypair, path: impl AsRef<Path>) -> Result<(), KeyError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let io = |source| KeyError::Io {
        path: shown.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let text = serde_json::to_string(&keypair.to_bytes().to_vec())
        .map_err(|e| io(std::io::Error::other(e)))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path).map_err(io)?;
    // The mode above applies only to a new file: tighten an existing one too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(text.as_bytes()).map_err(io)
}

/// The ed25519 signing key of a Solana keypair, for signing x402++ messages (offers, vouchers,
/// receipts) with the same key.
pub fn signing_key(keypair: &Keypair) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(keypair.secret_bytes())
}

/// Whether the file's mode lets group or others read it (always false off Unix).
pub fn is_exposed(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

fn warn_if_exposed(path: &Path) {
    if is_exposed(path) {
        tracing::warn!(path = %path.display(), "keypair file is readable by group or others; run chmod 600 on it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solana_sdk::signature::Signer;

    #[test]
    fn written_keypairs_read_back_and_are_private() {
        let dir = std::env::temp_dir().join(format!("x402pp-keys-{}", std::process::id()));
        let path = dir.join("id.json");
        let keypair = Keypair::new();
        write_keypair(&keypair, &path).expect("writes");
        assert_eq!(
            read_keypair(&path).expect("reads").pubkey(),
            keypair.pubkey()
        );
        assert!(!is_exposed(&path));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The warnings `read_keypair` logs for `path`, captured at TRACE.
    #[cfg(unix)]
    fn warnings_reading(path: &Path) -> String {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            read_keypair(path).expect("reads");
        });
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[cfg(unix)]
    #[test]
    fn a_keypair_file_others_can_read_logs_a_warning_and_a_private_one_does_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("x402pp-key-modes-{}", std::process::id()));
        let path = dir.join("id.json");
        let keypair = Keypair::new();
        write_keypair(&keypair, &path).expect("writes");

        assert_eq!(warnings_reading(&path), "", "0600 reads silently");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let warnings = warnings_reading(&path);
        assert!(warnings.contains("chmod 600"), "{warnings}");
        assert!(warnings.contains(&path.display().to_string()), "{warnings}");
        // The warning names the file, never the key.
        assert!(!warnings.contains(&keypair.to_base58_string()));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(
            warnings_reading(&path).contains("chmod 600"),
            "group-readable warns too"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn garbage_is_a_format_error() {
        let path = std::env::temp_dir().join(format!("x402pp-bad-key-{}.json", std::process::id()));
        std::fs::write(&path, "[1,2,3]").expect("writes");
        assert!(matches!(read_keypair(&path), Err(KeyError::Format { .. })));
        let _ = std::fs::remove_file(path);
    }
}
