//! Machine-readable console events.
//!
//! Every state change PID 1 makes is printed as one line:
//!
//! ```text
//! @berth ms=1234 event=container.exited name=hello code=0
//! ```
//!
//! `@berth ` starts the line; then `key=value` fields separated by one space. `ms` (monotonic
//! milliseconds since boot) and `event` always come first. A value containing a space, `"`,
//! `\` or `=` — or an empty one — is written in double quotes with `\"`, `\\` and `\n` escapes.
//! `docs/events.md` lists every event and its fields.
//!
//! A crate of its own, with no dependencies and no system calls, so that whatever reads a
//! console (the QEMU harness, the tests) does not link PID 1's networking and schema crates.

#![warn(missing_docs)]

use std::fmt;

/// The prefix of every event line.
pub const PREFIX: &str = "@berth ";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Monotonic milliseconds since boot.
    pub ms: u64,
    /// Dotted event name, e.g. `container.started`.
    pub name: String,
    /// The other fields, in order.
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// A new event with no fields.
    pub fn new(ms: u64, name: &str) -> Event {
        Event { ms, name: name.to_string(), fields: Vec::new() }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl ToString) -> Event {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Parses one console line; `None` if it is not an event line. Leading garbage before
    /// `@berth ` (a console that did not start on a fresh line) is skipped.
    pub fn parse(line: &str) -> Option<Event> {
        let start = line.find(PREFIX)?;
        let mut rest = line[start + PREFIX.len()..].trim_end_matches(['\r', '\n']);
        let mut fields = Vec::new();
        while !rest.is_empty() {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            let eq = rest.find('=')?;
            let key = &rest[..eq];
            if key.is_empty() || key.contains(' ') {
                return None;
            }
            rest = &rest[eq + 1..];
            let value;
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => out.push('\n'),
                            Some((_, other)) => out.push(other),
                            None => return None,
                        },
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                let end = end?;
                value = out;
                rest = &quoted[end + 1..];
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                value = rest[..end].to_string();
                rest = &rest[end..];
            }
            fields.push((key.to_string(), value));
        }
        let mut it = fields.into_iter();
        let (k1, ms) = it.next()?;
        let (k2, name) = it.next()?;
        if k1 != "ms" || k2 != "event" {
            return None;
        }
        Some(Event { ms: ms.parse().ok()?, name, fields: it.collect() })
    }
}

fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    let plain = !v.is_empty() && !v.chars().any(|c| matches!(c, ' ' | '"' | '\\' | '=' | '\n' | '\r'));
    if plain {
        return f.write_str(v);
    }
    f.write_str("\"")?;
    for c in v.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => {}
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}ms={} event=", self.ms)?;
        write_value(f, &self.name)?;
        for (k, v) in &self.fields {
            write!(f, " {k}=")?;
            write_value(f, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_quoting() {
        let e = Event::new(42, "container.failed")
            .with("name", "hello")
            .with("error", "exec \"/bin/nope\": ENOENT = gone\\x")
            .with("empty", "");
        let line = e.to_string();
        assert!(line.starts_with("@berth ms=42 event=container.failed name=hello error=\""), "{line}");
        assert_eq!(Event::parse(&line), Some(e.clone()));
        assert_eq!(Event::parse(&format!("\r\x1b[0m{line}\r\n")), Some(e));
    }

    #[test]
    fn rejects_other_lines() {
        assert_eq!(Event::parse("hello | @berth is here"), None);
        assert_eq!(Event::parse("[    1.0] random kernel line"), None);
        assert_eq!(Event::parse("@berth event=x ms=1"), None);
    }
}
