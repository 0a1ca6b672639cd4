//! The request of `x402pp agent`, with curl's flags: `-X METHOD`, `-H 'Name: value'`
//! (repeatable), `-d DATA` / `-d @file` / `-d @-` (standard input).

use std::io::Read as _;
use std::path::PathBuf;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;

/// Why the request could not be built from the flags.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `-H` without `Name: value`.
    #[error("-H `{0}`: expected `Name: value`")]
    HeaderSyntax(String),
    /// An invalid header name or value.
    #[error("-H `{header}`: {reason}")]
    Header {
        /// What was typed.
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `-X` with something that is not an HTTP method.
    #[error("-X `{0}` is not an HTTP method")]
    Method(String),
    /// `-d @file` that cannot be read.
    #[error("-d @{path}: {source}")]
    DataFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

/// One `-H` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: HeaderName,
    /// The value.
    pub value: HeaderValue,
}

/// Parses `Name: value` as curl does: split at the first `:`, surrounding spaces trimmed.
pub fn parse_header(input: &str) -> Result<Header, RequestError> {
    let (name, value) = input
        .split_once(':')
        .ok_or_else(|| RequestError::HeaderSyntax(input.to_owned()))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| RequestError::Header {
            header: input.to_owned(),
            reason: e.to_string(),
        })?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| RequestError::Header {
        header: input.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Header { name, value })
}

/// Parses `-X`: a method token, upper-cased (`post` → `POST`).
pub fn parse_method(input: &str) -> Result<Method, RequestError> {
    Method::from_bytes(input.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| RequestError::Method(input.to_owned()))
}

/// The body of `-d`: the text itself, or the bytes of `@file`, or standard input for `@-`.
pub fn read_data(data: &str) -> Result<Vec<u8>, RequestError> {
    match data.strip_prefix('@') {
        None => Ok(data.as_bytes().to_vec()),
        Some("-") => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|source| RequestError::DataFile {
                    path: PathBuf::from("-"),
                    source,
                })?;
            Ok(body)
        }
        Some(path) => std::fs::read(path).map_err(|source| RequestError::DataFile {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// The method of a request: `-X` when given, else POST with a body (as curl does), else GET.
pub fn method_of(explicit: Option<&Method>, has_body: bool) -> Method {
    match explicit {
        Some(method) => method.clone(),
        None if has_body => Method::POST,
        None => Method::GET,
    }
}

/// The content type to add for a body: JSON when it parses as JSON and no `-H Content-Type`
/// says otherwise.
pub fn implied_content_type(headers: &[Header], body: &[u8]) -> Option<HeaderValue> {
    if body.is_empty() || headers.iter().any(|h| h.name == CONTENT_TYPE) {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .ok()
        .map(|_| HeaderValue::from_static("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_colon_and_trim_spaces() {
        let header = parse_header("Authorization:  Bearer a:b ").ok();
        assert_eq!(
            header,
            Some(Header {
                name: HeaderName::from_static("authorization"),
                value: HeaderValue::from_static("Bearer a:b"),
            })
        );
        let empty = parse_header("X-Empty:").ok();
        assert_eq!(empty.map(|h| h.value), Some(HeaderValue::from_static("")));
    }

    #[test]
    fn malformed_headers_are_refused_with_what_was_typed() {
        let no_colon = parse_header("Accept application/json").err();
        assert!(
            matches!(no_colon, Some(RequestError::HeaderSyntax(ref h)) if h == "Accept application/json")
        );
        assert!(matches!(
            parse_header("Bad Name: x"),
            Err(RequestError::Header { .. })
        ));
        assert!(matches!(
            parse_header("X-Newline: a\nb"),
            Err(RequestError::Header { .. })
        ));
        let message = parse_header("nope").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("-H `nope`: expected `Name: value`")
        );
    }

    #[test]
    fn methods_are_upper_cased_and_default_like_curl() {
        assert_eq!(parse_method("post").ok(), Some(Method::POST));
        assert_eq!(parse_method("PATCH").ok(), Some(Method::PATCH));
        assert!(matches!(parse_method("GE T"), Err(RequestError::Method(_))));
        assert_eq!(method_of(None, false), Method::GET);
        assert_eq!(method_of(None, true), Method::POST);
        assert_eq!(method_of(Some(&Method::PUT), true), Method::PUT);
    }

    #[test]
    fn data_is_literal_or_read_from_a_file_after_an_at_sign() {
        assert_eq!(read_data("{\"a\":1}").ok(), Some(b"{\"a\":1}".to_vec()));
        let path = std::env::temp_dir().join(format!("x402pp-data-{}.json", std::process::id()));
        assert!(std::fs::write(&path, b"{\"prompt\":\"hi\"}").is_ok());
        let read = read_data(&format!("@{}", path.display())).ok();
        let _ = std::fs::remove_file(&path);
        assert_eq!(read, Some(b"{\"prompt\":\"hi\"}".to_vec()));
        let missing = read_data("@/nonexistent/x402pp-body.json").err();
        assert!(
            matches!(missing, Some(RequestError::DataFile { ref path, .. }) if path == std::path::Path::new("/nonexistent/x402pp-body.json"))
        );
    }

    #[test]
    fn json_bodies_get_a_json_content_type_unless_one_is_given() {
        assert_eq!(
            implied_content_type(&[], b"{\"a\":1}"),
            Some(HeaderValue::from_static("application/json"))
        );
        assert_eq!(implied_content_type(&[], b"a=1&b=2"), None);
        assert_eq!(implied_content_type(&[], b""), None);
        let given = parse_header("Content-Type: text/plain").ok();
        assert_eq!(implied_content_type(given.as_slice(), b"{\"a\":1}"), None);
    }
}
