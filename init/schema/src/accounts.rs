//! An image's accounts (`/etc/passwd` and `/etc/group`) and the resolution of a container's
//! `user[:group]` against them, as runc does. `berth build` reads the files from the image's
//! layers and keeps the parsed entries in the plan, so PID 1 resolves the users of containers
//! delivered at boot with the same code.

use serde::{Deserialize, Serialize};

/// Highest uid/gid runc accepts.
const MAX_ID: i64 = i32::MAX as i64;

/// A `passwd` line: `name:password:uid:gid:gecos:home:shell` (only what resolution needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswdEntry {
    /// The user name.
    pub name: String,
    /// The uid as written (a malformed field counts as 0, as in runc).
    pub uid: i64,
    /// The primary gid as written.
    pub gid: i64,
}

/// A `group` line: `name:password:gid:member,member`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// The group name.
    pub name: String,
    /// The gid as written.
    pub gid: i64,
    /// The user names listed as members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// The accounts of an image: the entries of its (merged) `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    /// `/etc/passwd`'s entries; `None` when the image has no such file.
    #[serde(default)]
    pub passwd: Option<Vec<PasswdEntry>>,
    /// `/etc/group`'s entries; `None` when the image has no such file.
    #[serde(default)]
    pub group: Option<Vec<GroupEntry>>,
}

/// Parses an id field as runc does (`strconv.Atoi`, a malformed field counts as 0).
fn parse_id(field: Option<&str>) -> i64 {
    field.and_then(|f| f.trim().parse().ok()).unwrap_or(0)
}

fn account_lines(bytes: &[u8]) -> impl Iterator<Item = Vec<&str>> {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn parse_passwd(bytes: &[u8]) -> Vec<PasswdEntry> {
    account_lines(bytes)
        .map(|f| PasswdEntry {
            name: f[0].to_string(),
            uid: parse_id(f.get(2).copied()),
            gid: parse_id(f.get(3).copied()),
        })
        .collect()
}

fn parse_group(bytes: &[u8]) -> Vec<GroupEntry> {
    account_lines(bytes)
        .map(|f| GroupEntry {
            name: f[0].to_string(),
            gid: parse_id(f.get(2).copied()),
            members: f
                .get(3)
                .map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
        })
        .collect()
}

fn check_range(id: i64, what: &str, spec: &str) -> Result<u32, String> {
    match u32::try_from(id) {
        Ok(n) if id <= MAX_ID => Ok(n),
        _ => Err(format!("user {spec:?}: {what} {id} is out of range (0..={MAX_ID})")),
    }
}

impl Accounts {
    /// Parses the content of `/etc/passwd` and `/etc/group` (`None`: the image has no such file).
    pub fn parse(passwd: Option<&[u8]>, group: Option<&[u8]>) -> Accounts {
        Accounts { passwd: passwd.map(parse_passwd), group: group.map(parse_group) }
    }

    /// Resolves a container's `user[:group]` (names or numbers) to `(uid, gid, additional
    /// gids)`. Implements runc's `user.GetExecUser` with Docker's defaults (uid 0, gid 0):
    ///
    /// - the user part (empty: uid 0) is looked up in `/etc/passwd` by name, or by uid when
    ///   numeric; a found entry gives the uid and the primary gid; a numeric uid without an entry
    ///   is used as is with gid 0; an unknown name is an error;
    /// - an explicit group (name or number) replaces the gid, and then no additional groups are
    ///   added; a numeric gid without an entry is used as is, an unknown name is an error;
    /// - without an explicit group, the additional gids are the groups of `/etc/group` listing the
    ///   matched user name (so `""` in an image whose `/etc/group` lists `root` in `wheel` gets
    ///   `wheel`, as with `docker run`).
    pub fn resolve(&self, user: &str) -> Result<(u32, u32, Vec<u32>), String> {
        let mut parts = user.split(':');
        let user_arg = parts.next().unwrap_or("");
        let group_arg = parts.next().unwrap_or("");
        let uid_num = user_arg.parse::<i64>().ok();
        let gid_num = group_arg.parse::<i64>().ok();

        let (mut uid, mut gid) = (0u32, 0u32);
        let mut matched_name: Option<&str> = None;
        let found = self.passwd.as_deref().unwrap_or(&[]).iter().find(|u| {
            if user_arg.is_empty() {
                u.uid == 0
            } else if let Some(n) = uid_num {
                u.uid == n
            } else {
                u.name == user_arg
            }
        });
        if let Some(entry) = found {
            uid = check_range(entry.uid, "uid", user)?;
            gid = check_range(entry.gid, "gid", user)?;
            matched_name = Some(&entry.name);
        } else if !user_arg.is_empty() {
            match uid_num {
                Some(n) => uid = check_range(n, "uid", user)?,
                None if self.passwd.is_none() => {
                    return Err(format!(
                        "user {user_arg:?} cannot be resolved: the image has no /etc/passwd (use a numeric uid[:gid])"
                    ))
                }
                None => {
                    return Err(format!(
                        "user {user_arg:?} is not in the image's /etc/passwd (add it to the image, or use a numeric uid[:gid])"
                    ))
                }
            }
        }

        let mut additional = Vec::new();
        if !group_arg.is_empty() || matched_name.is_some() {
            let groups: Vec<&GroupEntry> = self
                .group
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .filter(|g| {
                    if group_arg.is_empty() {
                        matched_name.is_some_and(|name| g.members.iter().any(|m| m == name))
                    } else if let Some(n) = gid_num {
                        g.gid == n
                    } else {
                        g.name == group_arg
                    }
                })
                .collect();
            if !group_arg.is_empty() {
                match (groups.first(), gid_num) {
                    (Some(g), _) => gid = check_range(g.gid, "gid", user)?,
                    (None, Some(n)) => gid = check_range(n, "gid", user)?,
                    (None, None) => {
                        return Err(format!(
                            "group {group_arg:?} is not in the image's /etc/group (add it to the image, or use a numeric gid)"
                        ))
                    }
                }
            } else {
                for g in groups {
                    additional.push(check_range(g.gid, "gid", user)?);
                }
            }
        }
        Ok((uid, gid, additional))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:1001:50::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:\naudio:x:29:app\n";

    fn resolve(user: &str) -> Result<(u32, u32, Vec<u32>), String> {
        Accounts::parse(Some(PASSWD.as_bytes()), Some(GROUP.as_bytes())).resolve(user)
    }

    #[test]
    fn runc_user_rules() {
        assert_eq!(resolve("").unwrap(), (0, 0, vec![10]));
        assert_eq!(resolve("app").unwrap(), (1000, 1000, vec![10, 29]));
        assert_eq!(resolve("1000").unwrap(), (1000, 1000, vec![10, 29]));
        assert_eq!(resolve("app:staff").unwrap(), (1000, 50, vec![]));
        assert_eq!(resolve("app:77").unwrap(), (1000, 77, vec![]));
        assert_eq!(resolve("4242").unwrap(), (4242, 0, vec![]));
        assert_eq!(resolve("4242:10").unwrap(), (4242, 10, vec![]));
        assert!(resolve("nobody").unwrap_err().contains("\"nobody\""));
        assert!(resolve("app:nogroup").unwrap_err().contains("nogroup"));
        assert!(resolve("-1").is_err());
    }

    #[test]
    fn without_account_files() {
        let none = Accounts::default();
        assert_eq!(none.resolve("").unwrap(), (0, 0, vec![]));
        assert_eq!(none.resolve("5:6").unwrap(), (5, 6, vec![]));
        assert_eq!(none.resolve("5").unwrap(), (5, 0, vec![]));
        let err = none.resolve("app").unwrap_err();
        assert!(err.contains("no /etc/passwd"), "{err}");
    }

    #[test]
    fn malformed_lines_and_the_plan_form() {
        let a = Accounts::parse(Some(b"# comment\n\nodd\nbad:x:nan:7\n"), Some(b"g:x:9:odd, bad ,\n"));
        assert_eq!(a.resolve("odd").unwrap(), (0, 0, vec![9]), "missing fields count as 0");
        assert_eq!(a.resolve("bad").unwrap(), (0, 7, vec![9]));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Accounts>(&json).unwrap(), a);
    }
}
