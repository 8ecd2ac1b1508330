//! Access decisions as pure functions over an identity and a slot's access
//! list. The proxy calls these at the edge and maps the result to a status;
//! every refusal carries a reason for the audit log (never shown raw to a
//! user who is not allowed to know the slot exists).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only dashboards; watches slots shared with them.
    Viewer,
    /// Their own slots (and team slots they are a member of).
    User,
    /// Everything; every access is audited.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking, after authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub role: Role,
}

/// Who may use one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAcl {
    pub owner: String,
    /// Team members: full use, like the owner.
    #[serde(default)]
    pub members: Vec<String>,
    /// May watch, never type.
    #[serde(default)]
    pub viewers: Vec<String>,
    /// A public read-only demo: any signed-in person may watch.
    #[serde(default)]
    pub public_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// May type.
    Write,
    /// May watch; the proxy filters input (see `frames`).
    ReadOnly,
    Deny(&'static str),
}

/// May `who` open the slot described by `acl`, and how?
pub fn slot_access(who: &Identity, acl: &SlotAcl) -> Access {
    let named = |list: &[String]| list.iter().any(|u| u == &who.user);
    if who.role == Role::Admin {
        return Access::Write;
    }
    let full = who.user == acl.owner || named(&acl.members);
    match (who.role, full) {
        (Role::User, true) => Access::Write,
        // A viewer account never types, even in its own slot.
        (Role::Viewer, true) => Access::ReadOnly,
        _ if named(&acl.viewers) || acl.public_read => Access::ReadOnly,
        _ => Access::Deny("not the owner, a member or a viewer of this slot"),
    }
}

/// Groups → role, highest wins; `None` when the user is in none of the
/// allowed groups (and allowed groups are configured).
pub fn role_from_groups(
    groups: &[String],
    admin_groups: &[String],
    viewer_groups: &[String],
    allowed_groups: &[String],
    default_role: Role,
) -> Option<Role> {
    let any = |set: &[String]| groups.iter().any(|g| set.contains(g));
    if any(admin_groups) {
        return Some(Role::Admin);
    }
    if !allowed_groups.is_empty() && !any(allowed_groups) && !any(viewer_groups) {
        return None;
    }
    if any(viewer_groups) && !any(allowed_groups) {
        return Some(Role::Viewer);
    }
    Some(default_role)
}

/// Make a slotgate user name out of a claim value: lowercase; an e-mail
/// address contributes its local part; other characters become '-'.
pub fn username_from_claim(value: &str) -> Option<String> {
    let local = value.split('@').next().unwrap_or(value).to_lowercase();
    let mut s: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s.trim_start_matches(['-', '_']).to_string();
    s.truncate(slotapi::MAX_ID_LEN);
    slotapi::UserName::new(s.clone()).ok().map(|_| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, role: Role) -> Identity {
        Identity {
            user: user.into(),
            role,
        }
    }

    #[test]
    fn decision_table() {
        let acl = SlotAcl {
            owner: "alice".into(),
            members: vec!["bob".into()],
            viewers: vec!["vic".into()],
            public_read: false,
        };
        let cases = [
            (id("alice", Role::User), Access::Write),
            (id("bob", Role::User), Access::Write),
            (id("vic", Role::User), Access::ReadOnly),
            (id("vic", Role::Viewer), Access::ReadOnly),
            (id("root", Role::Admin), Access::Write),
            (
                id("mallory", Role::User),
                Access::Deny("not the owner, a member or a viewer of this slot"),
            ),
            (
                id("mallory", Role::Viewer),
                Access::Deny("not the owner, a member or a viewer of this slot"),
            ),
            (id("alice", Role::Viewer), Access::ReadOnly),
        ];
        for (who, want) in cases {
            assert_eq!(slot_access(&who, &acl), want, "{who:?}");
        }
        let demo = SlotAcl {
            owner: "demo".into(),
            public_read: true,
            ..Default::default()
        };
        assert_eq!(
            slot_access(&id("anyone", Role::User), &demo),
            Access::ReadOnly
        );
    }

    #[test]
    fn groups_map_to_roles() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let admins = s(&["ops"]);
        let viewers = s(&["auditors"]);
        let allowed = s(&["eng"]);
        assert_eq!(
            role_from_groups(&s(&["eng", "ops"]), &admins, &viewers, &allowed, Role::User),
            Some(Role::Admin)
        );
        assert_eq!(
            role_from_groups(&s(&["eng"]), &admins, &viewers, &allowed, Role::User),
            Some(Role::User)
        );
        assert_eq!(
            role_from_groups(&s(&["auditors"]), &admins, &viewers, &allowed, Role::User),
            Some(Role::Viewer)
        );
        assert_eq!(
            role_from_groups(&s(&["sales"]), &admins, &viewers, &allowed, Role::User),
            None
        );
        assert_eq!(
            role_from_groups(&s(&[]), &admins, &viewers, &[], Role::User),
            Some(Role::User)
        );
    }
}
