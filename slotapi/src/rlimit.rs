//! The open-files limit both long-running programs lift at start.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The soft open-files limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub after: u64,
}

/// Lift the soft open-files limit to the hard one (never lowers it).
/// systemd starts services with a soft limit of 1024 (hard 524288); the
/// supervisor holds a pidfd and a probe socket per slot, the gateway two
/// sockets per open terminal, so the soft limit would be reached long
/// before the machine's.
pub fn raise_open_files() -> OpenFiles {
    let soft = || getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let before = soft();
    let lim = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (lim.current, lim.maximum) {
        if current < maximum {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            );
        }
    }
    OpenFiles {
        before,
        after: soft(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_lifted_to_the_hard_one() {
        let lim = getrlimit(Resource::Nofile);
        let hard = lim.maximum.expect("a finite hard open-files limit");
        // Start from a low soft limit, as systemd's 1024.
        let low = hard.min(256);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: Some(hard),
            },
        )
        .unwrap();
        let got = raise_open_files();
        assert_eq!(got.before, low);
        assert_eq!(got.after, hard);
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
