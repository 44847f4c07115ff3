//! User-namespace id ranges: `userns = "auto"` gives a container [`USERNS_RANGE`] of the
//! machine's user and group ids of its own. `berth build` and PID 1 (for containers delivered at
//! boot) hand them out with the same [`UsernsRanges`], by container name.

use serde::{Deserialize, Serialize};

use super::PlannedContainer;

/// A range of the machine's user and group ids.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    /// The first id (the container's root).
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

/// Where `userns = "auto"` ranges start (as `/etc/subuid` conventionally does).
pub const USERNS_FIRST_ID: u32 = 100_000;
/// The size of each container's id range.
pub const USERNS_RANGE: u32 = 65_536;

/// The id ranges of a machine's containers, by name. A container keeps the range it holds; one
/// without gets the next free range, after every range held or given: ranges never overlap.
#[derive(Debug, Clone)]
pub struct UsernsRanges {
    /// The range of each container that has one (a list: a machine has few containers).
    held: Vec<(String, IdRange)>,
    /// The first id after every range in `held`.
    next: u32,
}

impl Default for UsernsRanges {
    /// No range given yet: the first goes to [`USERNS_FIRST_ID`].
    fn default() -> Self {
        UsernsRanges { held: Vec::new(), next: USERNS_FIRST_ID }
    }
}

impl UsernsRanges {
    /// The ranges `containers` (a plan's) hold.
    pub fn held_by<'a>(containers: impl IntoIterator<Item = &'a PlannedContainer>) -> UsernsRanges {
        let mut ranges = UsernsRanges::default();
        for c in containers {
            if let Some(range) = c.userns {
                ranges.next = ranges.next.max(range.host_id.saturating_add(range.size));
                ranges.held.push((c.name.clone(), range));
            }
        }
        ranges
    }

    /// The range of the container `name`: the one it holds, else the next free one. An error
    /// when the machine's ids are used up.
    pub fn range_for(&mut self, name: &str) -> Result<IdRange, String> {
        if let Some((_, range)) = self.held.iter().find(|(held, _)| held == name) {
            return Ok(*range);
        }
        let range = IdRange { host_id: self.next, size: USERNS_RANGE };
        self.next = self.next.checked_add(USERNS_RANGE).ok_or_else(|| {
            format!(
                "userns = \"auto\": no range of {USERNS_RANGE} user ids is left after the {} given; use userns = \"host\" for some containers",
                self.held.len()
            )
        })?;
        self.held.push((name.to_string(), range));
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: IdRange, b: IdRange) -> bool {
        a.host_id < b.host_id + b.size && b.host_id < a.host_id + a.size
    }

    #[test]
    fn by_name_never_overlapping() {
        let mut ids = UsernsRanges::default();
        let a = ids.range_for("a").unwrap();
        let b = ids.range_for("b").unwrap();
        assert_eq!((a.host_id, b.host_id), (USERNS_FIRST_ID, USERNS_FIRST_ID + USERNS_RANGE));
        assert_eq!(ids.range_for("a").unwrap(), a, "a container keeps its range");
        assert!(!overlap(a, b));
    }

    #[test]
    fn used_up() {
        let mut ids = UsernsRanges { held: Vec::new(), next: u32::MAX - USERNS_RANGE };
        assert!(ids.range_for("last").is_ok());
        let e = ids.range_for("one-more").unwrap_err();
        assert!(e.contains("userns = \"host\""), "{e}");
    }
}
