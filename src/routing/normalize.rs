//! Request path normalisation (RFC 3986 sections 6.2.2 and 5.2.4), done once before routing so the route
//! and the upstream see the same path: percent-encoded unreserved characters are decoded, the hex digits of
//! the other escapes upper-cased, and dot segments (`.`, `..`, also when written `%2e`) removed.
//! Encoded delimiters such as `%2F` and `%5C` stay encoded. A path whose `..` segments climb above the root,
//! or with a malformed escape, is an error (answered 400).
//!
//! The common path (nothing to change) is one scan of the bytes and returns the input without allocating.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// More `..` segments than there are segments to remove.
    AboveRoot,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::AboveRoot => "the path climbs above the root",
        })
    }
}

/// Normalises an origin-form `path` (starting with `/`); any other text (`*`, empty) is returned as it is.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || !needs_work(path.as_bytes())? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Whether anything changes: an escape to decode or upper-case, or a dot segment. Checks every escape.
fn needs_work(b: &[u8]) -> Result<bool, PathError> {
    let mut work = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (hi, lo) = escape_at(b, i)?;
                if is_unreserved((hi << 4) | lo)
                    || b[i + 1].is_ascii_lowercase()
                    || b[i + 2].is_ascii_lowercase()
                {
                    work = true;
                }
                i += 3;
                continue;
            }
            b'.' if i > 0 && b[i - 1] == b'/' => {
                let rest = &b[i..];
                let seg_len = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                if seg_len == 1 || (seg_len == 2 && rest[1] == b'.') {
                    work = true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(work)
}

/// The two hex digit values of the escape at `i` (which holds `%`).
fn escape_at(b: &[u8], i: usize) -> Result<(u8, u8), PathError> {
    match (
        b.get(i + 1).copied().and_then(hex),
        b.get(i + 2).copied().and_then(hex),
    ) {
        (Some(hi), Some(lo)) => Ok((hi, lo)),
        _ => Err(PathError::BadEscape),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 section 2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters and upper-cases the hex digits of the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (hi, lo) = escape_at(b, i)?;
            let c = (hi << 4) | lo;
            if is_unreserved(c) {
                out.push(c);
            } else {
                out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII was added to text that was UTF-8, so this cannot fail.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// RFC 3986 section 5.2.4 for a path starting with `/`, except that climbing above the root is an error.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut ends_in_dir = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "." => ends_in_dir = true,
            ".." => {
                if out.is_empty() {
                    return Err(PathError::AboveRoot);
                }
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
                ends_in_dir = true;
            }
            _ => {
                out.push('/');
                out.push_str(segment);
                ends_in_dir = false;
            }
        }
    }
    if ends_in_dir || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/admin", Ok("/admin")),
            ("/a/b/", Ok("/a/b/")),
            ("/a//b", Ok("/a//b")),
            ("/a.b/.c/..d/...", Ok("/a.b/.c/..d/...")),
            ("/api/../admin", Ok("/admin")),
            ("/api/./admin", Ok("/api/admin")),
            ("/a/b/c/./../../g", Ok("/a/g")),
            ("/a/.", Ok("/a/")),
            ("/a/..", Ok("/")),
            ("/.", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/api/%2e%2e/admin", Ok("/admin")),
            ("/api/%2E%2E/admin", Ok("/admin")),
            ("/api/.%2e/admin", Ok("/admin")),
            ("/api/%2e/admin", Ok("/api/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/%7euser/%5f", Ok("/~user/_")),
            ("/a%2fb", Ok("/a%2Fb")),
            ("/a%2Fb", Ok("/a%2Fb")),
            ("/a%5cb", Ok("/a%5Cb")),
            ("/a%2f..%2fb", Ok("/a%2F..%2Fb")),
            ("/%e2%82%ac", Ok("/%E2%82%AC")),
            ("/%20", Ok("/%20")),
            ("/..", Err(PathError::AboveRoot)),
            ("/../admin", Err(PathError::AboveRoot)),
            ("/a/../..", Err(PathError::AboveRoot)),
            ("/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/a%", Err(PathError::BadEscape)),
            ("/a%2", Err(PathError::BadEscape)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("*", Ok("*")),
            ("", Ok("")),
        ];
        for (input, want) in cases {
            let got = normalize(input);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *want,
                "normalize({input:?})"
            );
        }
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        for p in ["/", "/admin", "/a/b/c?", "/a%2Fb", "/a.b/..c", "/x/%20"] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(_))),
                "{p:?} was copied"
            );
        }
    }
}
