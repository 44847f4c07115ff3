//! How the plan writes its runtime-typed fields in JSON, by the names people read: a capability
//! mask as its `CAP_…` names, resource limits by Docker's names. One adapter per encoding, used
//! with `#[serde(with = "…")]`; reading checks every name.

/// A capability mask (bit N = capability N), written as the `CAP_…` names of its bits in number
/// order: `["CAP_CHOWN", "CAP_KILL"]`.
pub mod capability_names {
    use berth_runtime::capabilities;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Writes the names of the mask's bits.
    pub fn serialize<S: Serializer>(mask: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(capabilities::names(*mask))
    }

    /// Reads capability names (`CAP_CHOWN`, `CHOWN`; `ALL`) into a mask.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        capabilities::mask(&names).map_err(D::Error::custom)
    }
}

/// Resource limits, written as a map from Docker's name to `[soft, hard]`:
/// `{"nofile": [1024, 4096]}`, in the order of the list.
pub mod rlimits_by_name {
    use std::fmt;

    use berth_runtime::{rlimits, Rlimit};
    use serde::de::{Error, MapAccess, Visitor};
    use serde::ser::{Error as _, SerializeMap};
    use serde::{Deserializer, Serializer};

    /// Writes each limit under its Docker name.
    pub fn serialize<S: Serializer>(limits: &[Rlimit], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(limits.len()))?;
        for limit in limits {
            let name = rlimits::name(limit.resource)
                .ok_or_else(|| S::Error::custom(format!("RLIMIT number {} has no name", limit.resource)))?;
            map.serialize_entry(name, &(limit.soft, limit.hard))?;
        }
        map.end()
    }

    /// Reads the map back, in its order; an unknown name is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rlimit>, D::Error> {
        d.deserialize_map(ByName)
    }

    /// Visits the map of limits.
    struct ByName;

    impl<'de> Visitor<'de> for ByName {
        type Value = Vec<Rlimit>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from a limit's name (\"nofile\") to [soft, hard]")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Rlimit>, A::Error> {
            let mut limits = Vec::new();
            while let Some((name, (soft, hard))) = map.next_entry::<String, (u64, u64)>()? {
                let resource = rlimits::resource(&name)
                    .ok_or_else(|| A::Error::custom(format!("ulimits: `{name}` is not a limit")))?;
                limits.push(Rlimit { resource, soft, hard });
            }
            Ok(limits)
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_runtime::Rlimit;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "super::capability_names")]
        caps: u64,
        #[serde(with = "super::rlimits_by_name")]
        limits: Vec<Rlimit>,
    }

    #[test]
    fn capability_masks_and_limits_round_trip_by_name() {
        let sample = Sample {
            caps: 1 | 1 << 5 | 1 << 21,
            limits: vec![
                Rlimit { resource: libc::RLIMIT_NPROC, soft: 10, hard: 20 },
                Rlimit { resource: libc::RLIMIT_CORE, soft: 0, hard: u64::MAX },
            ],
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(
            json,
            r#"{"caps":["CAP_CHOWN","CAP_KILL","CAP_SYS_ADMIN"],"limits":{"nproc":[10,20],"core":[0,18446744073709551615]}}"#
        );
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        let empty = Sample { caps: 0, limits: vec![] };
        assert_eq!(serde_json::from_str::<Sample>(&serde_json::to_string(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = serde_json::from_str::<Sample>(r#"{"caps":["CAP_FLY"],"limits":{}}"#).unwrap_err();
        assert!(e.to_string().contains("`CAP_FLY` is not a capability"), "{e}");
        let e = serde_json::from_str::<Sample>(r#"{"caps":[],"limits":{"files":[1,1]}}"#).unwrap_err();
        assert!(e.to_string().contains("`files` is not a limit"), "{e}");
    }
}
