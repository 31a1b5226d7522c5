//! Secrets that cannot be printed by accident, and URLs printed with their passwords hidden.

use std::fmt;

/// A value that never shows up in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so it never prints.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: call this only where it is handed to the system that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A connection URL whose password is kept apart and never displayed.
///
/// `Display` shows `scheme://user:****@host:port/path` (query parameters that carry secrets are
/// masked too); [`SecretUrl::without_password`] gives the URL to hand to child processes, with
/// the password passed separately (e.g. `PGPASSWORD`) so it never shows in `ps`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    url: url::Url,
    password: Option<Secret>,
}

const SECRET_QUERY_KEYS: &[&str] = &["password", "pass", "secret", "token", "sslpassword"];

impl SecretUrl {
    /// Parses a URL; the error message never contains the input (it may hold a password).
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(input).map_err(|e| {
            format!("not a valid URL ({e}); expected e.g. postgres://user:password@host:5432/db")
        })?;
        let mut password = url
            .password()
            .map(|p| Secret::new(percent_decode(p).unwrap_or_else(|| p.to_string())));
        if password.is_some() {
            // Cannot fail for URLs that have a host, which is the only way to have a password.
            let _ = url.set_password(None);
        }
        // libpq also takes the password as a query parameter (`?password=...`). It is moved out
        // of the URL like the userinfo one, so it never reaches a child's arguments (`ps`).
        let in_query = url
            .query_pairs()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.into_owned());
        if let Some(p) = in_query {
            let rest: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if rest.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(rest);
            }
            if password.is_none() {
                password = Some(Secret::new(p));
            }
        }
        Ok(SecretUrl { url, password })
    }

    /// The URL's scheme (`postgres`, `redis`, `rediss`, `s3`).
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The host, if any.
    pub fn host(&self) -> Option<String> {
        self.url.host_str().map(|h| h.to_string())
    }

    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.url.port()
    }

    /// The user name, percent-decoded.
    pub fn username(&self) -> String {
        percent_decode(self.url.username()).unwrap_or_else(|| self.url.username().to_string())
    }

    /// The password, percent-decoded, still wrapped.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The path without its leading slash, percent-decoded (for PostgreSQL: the database name).
    pub fn database(&self) -> Option<String> {
        let path = self.url.path().trim_start_matches('/');
        if path.is_empty() {
            None
        } else {
            Some(percent_decode(path).unwrap_or_else(|| path.to_string()))
        }
    }

    /// The same URL pointing at another database (path).
    pub fn with_database(&self, database: &str) -> SecretUrl {
        let mut url = self.url.clone();
        url.set_path(&format!("/{}", utf8_percent_encode_path(database)));
        SecretUrl {
            url,
            password: self.password.clone(),
        }
    }

    /// The query parameters, decoded (e.g. `sslmode=verify-full`).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// Which server and database this is, without user or secrets: `scheme://host:port/db`
    /// (the default port filled in), what a snapshot's history must stay the same for.
    pub fn identity(&self) -> String {
        let port = self.url.port_or_known_default().or(match self.scheme() {
            "postgres" | "postgresql" => Some(5432),
            "redis" | "rediss" => Some(6379),
            _ => None,
        });
        format!(
            "{}://{}{}{}",
            match self.scheme() {
                "postgresql" => "postgres",
                "rediss" => "redis",
                other => other,
            },
            self.host().unwrap_or_default(),
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            self.url.path()
        )
    }

    /// The URL without its password (from the userinfo or a `password` query parameter), for
    /// child processes that get the password another way (`PGPASSWORD`).
    pub fn without_password(&self) -> String {
        self.url.to_string()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if self.password.is_some() {
            let _ = shown.set_password(Some("****"));
        }
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                    "****".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn utf8_percent_encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_never_displayed() {
        let u = SecretUrl::parse("postgres://app:s3cr%40t@db.internal:5432/shop?sslmode=require")
            .unwrap();
        assert_eq!(u.password().unwrap().expose(), "s3cr@t");
        let shown = u.to_string();
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("app:****@db.internal:5432/shop"), "{shown}");
        assert!(!format!("{u:?}").contains("s3cr"));
        assert!(!u.without_password().contains("s3cr"));
        assert_eq!(u.database().as_deref(), Some("shop"));
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        let u = SecretUrl::parse("postgres://h/db?password=hunter2&sslmode=disable").unwrap();
        let shown = u.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=disable"));
    }

    /// Regression: a password given as a query parameter reached the command line of
    /// pg_dump, pg_restore and psql, visible to `ps`.
    #[test]
    fn passwords_in_query_parameters_reach_the_child_command_line() {
        let u =
            SecretUrl::parse("postgres://app@h:5432/db?password=hunter2&sslmode=disable").unwrap();
        assert_eq!(u.password().map(Secret::expose), Some("hunter2"));
        assert_eq!(
            u.without_password(),
            "postgres://app@h:5432/db?sslmode=disable"
        );
        let only = SecretUrl::parse("postgres://app@h/db?password=hunter2").unwrap();
        assert_eq!(only.without_password(), "postgres://app@h/db");
    }

    #[test]
    fn parse_error_does_not_echo_the_input() {
        let err = SecretUrl::parse("postgres://user:topsecret@[bad").unwrap_err();
        assert!(!err.contains("topsecret"));
    }

    #[test]
    fn with_database_keeps_credentials() {
        let u = SecretUrl::parse("postgres://a:b@h:1/one").unwrap();
        let v = u.with_database("two words");
        assert_eq!(v.database().as_deref(), Some("two words"));
        assert_eq!(v.password().unwrap().expose(), "b");
    }
}
