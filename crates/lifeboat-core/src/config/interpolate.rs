//! `${VAR}` interpolation for configuration files.
//!
//! Interpolation is checked on the raw text before TOML parsing, so a missing variable is
//! reported at its exact line and column, and TOML errors point at the text the user wrote.
//! Values are then expanded inside the parsed strings only, so an environment value can never
//! change the structure of the file. `${VAR:-default}` gives a default; `$$` is a literal `$`.

/// Looks up an environment variable; passed in so the library never reads the environment itself.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A reference that cannot be expanded: an unset (or empty) variable, or a `${` that is
/// never closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVar {
    /// The variable's name.
    pub name: String,
    /// Byte offset of the `$` in the input.
    pub offset: usize,
    /// `${NAME` without its `}`.
    pub unclosed: bool,
}

/// Expands `${VAR}` references in `input`. Returns the first missing (unset or empty) variable.
pub fn expand(input: &str, lookup: Lookup<'_>) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(end) = input[i + 2..].find('}') else {
                let rest = &input[i + 2..];
                let name_len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                return Err(MissingVar {
                    name: rest[..name_len].to_string(),
                    offset: i,
                    unclosed: true,
                });
            };
            {
                let inner = &input[i + 2..i + 2 + end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                if is_var_name(name) {
                    match lookup(name).filter(|v| !v.is_empty()) {
                        Some(v) => out.push_str(&v),
                        None => match default {
                            Some(d) => out.push_str(d),
                            None => {
                                return Err(MissingVar {
                                    name: name.to_string(),
                                    offset: i,
                                    unclosed: false,
                                })
                            }
                        },
                    }
                    i += 2 + end + 1;
                    continue;
                }
            }
        }
        let ch_len = input[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&input[i..i + ch_len]);
        i += ch_len;
    }
    Ok(out)
}

/// Checks every `${VAR}` in a whole file, skipping comment lines.
pub fn check_file(text: &str, lookup: Lookup<'_>) -> Result<(), MissingVar> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim_start().starts_with('#') {
            expand(line, lookup).map_err(|m| MissingVar {
                offset: line_start + m.offset,
                ..m
            })?;
        }
        line_start += line.len();
    }
    Ok(())
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub use crate::text::line_col;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DATABASE_URL" => Some("postgres://u:p@h/db".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(
            expand("${DATABASE_URL}", &env).unwrap(),
            "postgres://u:p@h/db"
        );
        assert_eq!(expand("a-${NOPE:-x}-b", &env).unwrap(), "a-x-b");
        assert_eq!(expand("cost $$5", &env).unwrap(), "cost $5");
        assert_eq!(
            expand("é${DATABASE_URL}é", &env).unwrap(),
            "épostgres://u:p@h/dbé"
        );
    }

    #[test]
    fn missing_and_empty_variables_are_named_with_their_position() {
        let text = "# ${IGNORED}\n[[job]]\nurl = \"${MISSING}\"\n";
        let m = check_file(text, &env).unwrap_err();
        assert_eq!(m.name, "MISSING");
        assert_eq!(line_col(text, m.offset), (3, 8));
        assert_eq!(expand("${EMPTY}", &env).unwrap_err().name, "EMPTY");
    }

    /// Regression: an unclosed `${VAR` was accepted silently (and kept literally in the URL).
    #[test]
    fn an_unclosed_reference_is_accepted_silently() {
        let text = "[[job]]\nurl = \"postgres://u@h/${DB_NAME\"\n";
        let m = check_file(text, &env).unwrap_err();
        assert!(m.unclosed);
        assert_eq!(m.name, "DB_NAME");
        assert_eq!(line_col(text, m.offset), (2, 23));
        assert!(expand("cost ${", &env).unwrap_err().unclosed);
    }
}
