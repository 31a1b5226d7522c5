//! Small text helpers every layer uses, kept in a leaf so that no lower module imports a
//! higher one for them: durations as policies and flags write them (`26h`, `14d`), counted
//! nouns ("1 table", "3 directories"), byte sizes, and `line:col` of an offset in a file.

use std::time::Duration;

/// A duration the way policies write it (`14d`, `36h`, `90m`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses durations like `26h`, `90m`, `7d`, `1h30m`, `45s`.
pub fn parse_duration(input: &str) -> std::result::Result<Duration, String> {
    let s = input.trim();
    let bad = || format!("{input:?} is not a duration; use e.g. 26h, 90m, 7d or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    if total > MAX_DURATION_SECS {
        return Err(format!(
            "{input:?} is longer than Lifeboat takes ({}d, about 100 years): every duration is also compared with dates, which it must not overflow",
            MAX_DURATION_SECS / 86_400
        ));
    }
    Ok(Duration::from_secs(total))
}

/// The longest duration any setting or flag takes (100 years of 365 days): far beyond any
/// sensible lease, age or retention, and far inside what dates (`chrono`) can add.
pub const MAX_DURATION_SECS: u64 = 36_500 * 86_400;

/// "1 table", "2 tables", "3 directories".
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y = noun.len() > 1
        && noun.ends_with('y')
        && !noun[..noun.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else {
        format!("{n} {noun}s")
    }
}

/// `1.5 GiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
