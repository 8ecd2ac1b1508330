//! Who a slot runs as, and the directories that identity owns.
//!
//! Every sandbox owner (a user, or a team for `team-…` slots) maps to a
//! host uid/gid: allocated from `supervisor.uid_range` and recorded in
//! `state.db`, or the host account of the same name. The slot's processes
//! run as it; its sandbox (`users/<owner>/`, mode 0700) and its slot
//! directory (`<run>/slots/<id>/`, the owner with the gateway's group,
//! setgid, so ttyd's socket is the gateway's to reach) belong to it.
//! Without root (one person's workstation) everything is the daemon's own
//! user, and `doctor` says that slots are not isolated from each other.
//!
//! Everything here that touches a directory the tenant can write goes
//! through file descriptors opened with `O_NOFOLLOW`: the daemon is root,
//! and a symlink planted in a sandbox must never make it create, chown or
//! chmod a file elsewhere.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::process::{Gid, Uid};
use slotapi::config::TEAM_PREFIX;
use slotapi::SlotId;

use crate::config::UsersPref;
use crate::store::Store;

/// A slot's Unix identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Allocate { first: u32, last: u32 },
    System,
    Shared,
}

pub struct Tenants {
    how: How,
    store: Arc<Store>,
    daemon: Tenant,
    gateway_gid: u32,
}

/// The sandbox (and identity) a slot belongs to: a team slot's is the
/// team's, `team-<x>`; any other slot's is its owner's.
pub fn sandbox_key<'a>(id: &'a SlotId, owner: &'a str) -> &'a str {
    if id.as_str().starts_with(TEAM_PREFIX) {
        id.as_str()
    } else {
        owner
    }
}

/// `(name, uid, gid)` of each line of an `/etc/passwd`-format text.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            f.first()?.trim(),
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
        ))
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A group's gid from `/etc/group`.
pub fn group_gid(name: &str) -> Option<u32> {
    read("/etc/group").lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
    })
}

/// The daemon's own identity.
pub fn daemon_identity() -> Tenant {
    Tenant {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

/// What `supervisor.users` comes to for a daemon running as `daemon`:
/// whether owners get uids of their own, and in words. An error when the
/// setting cannot be had (a uid per owner without root).
pub fn users_mode(pref: UsersPref, daemon: Tenant) -> Result<(bool, String), String> {
    let how = how(pref, daemon)?;
    Ok((how != How::Shared, describe(how, daemon)))
}

fn describe(how: How, daemon: Tenant) -> String {
    match how {
        How::Allocate { first, last } => {
            format!("a uid per sandbox owner, allocated from {first}-{last}")
        }
        How::System => "each sandbox owner's host account".into(),
        How::Shared if daemon.uid == 0 => {
            "every slot as one unprivileged uid (slots are not isolated from each other)".into()
        }
        How::Shared => format!(
            "every slot as the daemon's uid {} (slots are not isolated from each other)",
            daemon.uid
        ),
    }
}

fn how(pref: UsersPref, daemon: Tenant) -> Result<How, String> {
    let root = daemon.uid == 0;
    Ok(match pref {
        UsersPref::Auto if root => How::Allocate {
            first: crate::config::DEFAULT_UID_RANGE.0,
            last: crate::config::DEFAULT_UID_RANGE.1,
        },
        UsersPref::Auto | UsersPref::Shared => How::Shared,
        UsersPref::Allocate { .. } | UsersPref::System if !root => {
            return Err(
                "supervisor.users asks for a uid per user, which needs the daemon to run as root \
                     (or set supervisor.users = \"shared\")"
                    .into(),
            )
        }
        UsersPref::Allocate { first, last } => How::Allocate { first, last },
        UsersPref::System => How::System,
    })
}

impl Tenants {
    pub fn new(
        pref: UsersPref,
        gateway_group: Option<&str>,
        store: Arc<Store>,
    ) -> Result<Tenants, String> {
        let daemon = daemon_identity();
        let how = how(pref, daemon)?;
        let gateway_gid = match gateway_group {
            None => daemon.gid,
            Some(g) => group_gid(g).ok_or_else(|| {
                format!("supervisor.gateway_group: there is no group {g:?} in /etc/group")
            })?,
        };
        Ok(Tenants {
            how,
            store,
            daemon,
            gateway_gid,
        })
    }

    pub fn gateway_gid(&self) -> u32 {
        self.gateway_gid
    }

    pub fn describe(&self) -> String {
        describe(self.how, self.daemon)
    }

    /// The identity of sandbox owner `key`, allocating one on first use.
    pub fn resolve(&self, key: &str) -> Result<Tenant, String> {
        match self.how {
            // A root daemon never runs a slot as root: "shared" is then one
            // unprivileged uid for every slot (allocated like an owner's).
            How::Shared if self.daemon.uid == 0 => {
                self.allocate(SHARED_KEY, DEFAULT_RANGE.0, DEFAULT_RANGE.1)
            }
            How::Shared => Ok(self.daemon),
            How::System => {
                let text = read("/etc/passwd");
                let (_, uid, gid) = passwd_entries(&text)
                    .find(|(n, _, _)| *n == key)
                    .ok_or_else(|| format!("there is no host account named {key:?} (supervisor.users = \"system\")"))?;
                if uid == 0 || gid == 0 {
                    return Err(format!(
                        "host account {key:?} is root's; refusing to run a slot as it"
                    ));
                }
                Ok(Tenant { uid, gid })
            }
            How::Allocate { first, last } => self.allocate(key, first, last),
        }
    }

    /// The uid recorded for `key`, or the lowest free one in the range
    /// that no host account or group uses.
    fn allocate(&self, key: &str, first: u32, last: u32) -> Result<Tenant, String> {
        let passwd = read("/etc/passwd");
        let group = read("/etc/group");
        let host_uids: std::collections::BTreeSet<u32> =
            passwd_entries(&passwd).map(|(_, u, _)| u).collect();
        // /etc/group has the gid in the same column as passwd's uid.
        let host_gids: std::collections::BTreeSet<u32> =
            passwd_entries(&group).map(|(_, g, _)| g).collect();
        let uid = self
            .store
            .tenant_uid(key, first, last, |u| {
                host_uids.contains(&u) || host_gids.contains(&u)
            })
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("supervisor.uid_range {first}-{last} has no free uid left"))?;
        Ok(Tenant { uid, gid: uid })
    }

    /// Whether spawning as `who` means dropping the daemon's identity.
    pub fn drops_to(&self, who: Tenant) -> bool {
        who.uid != self.daemon.uid || who.gid != self.daemon.gid
    }
}

/// The `tenants` row of the one uid all slots share in `users = "shared"`
/// under a root daemon (not a valid owner name, so no owner can take it).
const SHARED_KEY: &str = "(shared)";
const DEFAULT_RANGE: (u32, u32) = crate::config::DEFAULT_UID_RANGE;

fn uid(u: u32) -> Option<Uid> {
    Some(Uid::from_raw(u))
}
fn gid(g: u32) -> Option<Gid> {
    Some(Gid::from_raw(g))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn with_path(e: io::Error, what: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", what.display()))
}

/// Open `name` in `parent` as a directory, making it when missing (owned by
/// `owner`, `mode`). A symlink or a non-directory there is an error, never
/// followed.
fn subdir(parent: impl AsFd, name: &OsStr, owner: Tenant, mode: u32) -> io::Result<OwnedFd> {
    let made = match rfs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => return Err(e.into()),
    };
    let fd = rfs::openat(&parent, name, dir_flags(), Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "is a symlink or not a directory",
            )
        } else {
            e.into()
        }
    })?;
    if made {
        rfs::fchown(&fd, uid(owner.uid), gid(owner.gid))?;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    }
    Ok(fd)
}

/// Open (making as needed) each directory of `rel` below `base`, every one
/// owned by `owner`. `rel` must be relative and plain (no `..`).
pub fn open_dirs(base: &OwnedFd, rel: &Path, owner: Tenant, mode: u32) -> io::Result<OwnedFd> {
    let mut fd = rfs::openat(base, ".", dir_flags(), Mode::empty())?;
    for c in rel.components() {
        match c {
            Component::Normal(name) => {
                fd = subdir(&fd, name, owner, mode).map_err(|e| with_path(e, rel))?;
            }
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ))
            }
        }
    }
    Ok(fd)
}

/// Open a directory the daemon owns (data_dir, run_dir and what it makes
/// in them), making it with `mode` when missing; its mode is set to `mode`
/// either way, since tenants must be able to pass through it.
pub fn daemon_dir(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    std::fs::create_dir_all(path).map_err(|e| with_path(e, path))?;
    let fd = rfs::open(path, dir_flags(), Mode::empty()).map_err(|e| with_path(e.into(), path))?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| with_path(e.into(), path))?;
    Ok(fd)
}

/// Make `name` in `parent` a directory owned by `owner:group` with `mode`,
/// whatever it was: re-owned when it exists (the tree below it too, see
/// [`reown_tree`]). Returns the directory and whether it was re-owned.
pub fn owned_dir(
    parent: &OwnedFd,
    name: &str,
    owner: Tenant,
    group: u32,
    mode: u32,
) -> io::Result<(OwnedFd, u64)> {
    let fd = subdir(
        parent,
        OsStr::new(name),
        Tenant {
            uid: owner.uid,
            gid: group,
        },
        mode,
    )?;
    let st = rfs::fstat(&fd)?;
    let mut reowned = 0;
    if st.st_uid != owner.uid {
        reowned = reown_tree(&fd, owner)?;
    }
    rfs::fchown(&fd, uid(owner.uid), gid(group))?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok((fd, reowned))
}

/// Give everything below `dir` to `owner` (migration of a sandbox made
/// before slots had identities of their own). Never follows a symlink,
/// never leaves the directory's filesystem, and skips files with more than
/// one link (a hard link to a file outside must not hand that file over).
/// Returns how many entries it changed.
pub fn reown_tree(dir: &OwnedFd, owner: Tenant) -> io::Result<u64> {
    let dev = rfs::fstat(dir)?.st_dev;
    let mut changed = 0;
    let mut stack = vec![rfs::openat(dir, ".", dir_flags(), Mode::empty())?];
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > 1_000_000 {
            return Err(io::Error::other("more than a million directories; stopped"));
        }
        let entries = rfs::Dir::read_from(&d)?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let st = rfs::statat(&d, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if st.st_dev != dev {
                continue;
            }
            let kind = rfs::FileType::from_raw_mode(st.st_mode);
            if kind == rfs::FileType::RegularFile && st.st_nlink > 1 {
                tracing::warn!(
                    file = %String::from_utf8_lossy(name.to_bytes()),
                    "not re-owning a file with several hard links"
                );
                continue;
            }
            if st.st_uid != owner.uid {
                rfs::chownat(
                    &d,
                    name,
                    uid(owner.uid),
                    gid(owner.gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                changed += 1;
            }
            if kind == rfs::FileType::Directory {
                stack.push(rfs::openat(&d, name, dir_flags(), Mode::empty())?);
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_slots_have_the_teams_sandbox() {
        let team = SlotId::new("team-infra").unwrap();
        let own = SlotId::new("alice").unwrap();
        assert_eq!(sandbox_key(&team, "root"), "team-infra");
        assert_eq!(sandbox_key(&own, "alice"), "alice");
    }

    #[test]
    fn passwd_lines_parse_and_junk_is_skipped() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\nbob:x:1000:1001::/home/bob:/bin/sh\nbad:x:y:z\n";
        let got: Vec<_> = passwd_entries(text).collect();
        assert_eq!(got, vec![("root", 0, 0), ("bob", 1000, 1001)]);
    }

    #[test]
    fn open_dirs_refuses_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let me = Tenant {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        let base = rfs::open(dir.path(), dir_flags(), Mode::empty()).unwrap();
        open_dirs(&base, Path::new("home/.claude"), me, 0o700).unwrap();
        assert!(dir.path().join("home/.claude").is_dir());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("workdir")).unwrap();
        let err = open_dirs(&base, Path::new("workdir/x"), me, 0o700).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!outside.path().join("x").exists(), "followed the symlink");
        assert!(open_dirs(&base, Path::new("../up"), me, 0o700).is_err());
    }
}
