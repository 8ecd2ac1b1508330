//! Slot lifecycle events from the supervisor's own event broadcast (the
//! one `/v1/events` streams), turned into `created`, `started`, `stopped`,
//! `exited`, `restarted`, `errored` and `deleted` rows.
//!
//! The broadcast carries status changes only, so creations and deletions
//! are noticed by comparing the supervisor's slot list with the slots the
//! store already knows (`known_slots`), on every event and every few
//! seconds; that comparison also catches what happened while the daemon
//! was down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use slotapi::{Event, SlotStatus};
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::ActivityStore;
use crate::clock::now_ms;
use crate::supervisor::Supervisor;

/// How often the slot list is compared even without events.
const RESCAN: Duration = Duration::from_secs(2);

/// What a status change means, given the previous status of the slot.
pub fn classify(prev: Option<SlotStatus>, ev: &Event) -> Option<(&'static str, Option<String>)> {
    use SlotStatus::*;
    let reason = ev.reason.clone();
    match ev.status {
        Online if prev != Some(Online) => Some(("started", ev.pid.map(|p| format!("pid {p}")))),
        Stopped if reason.as_deref() == Some("restart") => Some(("restarted", reason)),
        Stopped if reason.as_deref() == Some("deleted") => Some(("deleted", None)),
        Stopped if prev != Some(Stopped) => Some(("stopped", reason)),
        Backoff if prev != Some(Backoff) => Some(("exited", reason)),
        Starting if prev == Some(Backoff) => Some(("restarted", reason)),
        Errored if prev != Some(Errored) => Some(("errored", reason)),
        _ => None,
    }
}

struct Known {
    owner: Option<String>,
    status: Option<SlotStatus>,
    /// Its deletion is recorded; it may linger in the list for a moment.
    gone: bool,
}

/// Record lifecycle events until the supervisor's broadcast closes.
pub async fn run(store: Arc<ActivityStore>, sup: Arc<Supervisor>) {
    let mut rx = sup.subscribe();
    let mut known = match load_known(&store).await {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "activity: cannot read known slots; lifecycle events are off");
            return;
        }
    };
    rescan(&store, &sup, &mut known).await;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    rescan(&store, &sup, &mut known).await;
                    let slot = ev.slot.to_string();
                    let was_known = known.contains_key(&slot);
                    let entry = known.entry(slot.clone()).or_insert(Known { owner: None, status: None, gone: false });
                    let prev = entry.status.replace(ev.status);
                    let owner = entry.owner.clone();
                    // A deletion the rescan already recorded is not recorded twice.
                    let kind = classify(prev, &ev)
                        .filter(|(k, _)| *k != "deleted" || was_known)
                        .filter(|_| !entry.gone);
                    let deleting = ev.status == SlotStatus::Stopped && ev.reason.as_deref() == Some("deleted");
                    if deleting {
                        entry.gone = true;
                    }
                    let st = ev.status.as_str().to_string();
                    let res = store
                        .write(move |c| {
                            let tx = c.transaction()?;
                            if let Some((kind, detail)) = kind {
                                insert(&tx, ev.ts_ms, &slot, owner.as_deref(), kind, detail.as_deref())?;
                            }
                            if deleting {
                                tx.execute("DELETE FROM known_slots WHERE slot = ?1", [&slot])?;
                            } else {
                                tx.execute(
                                    "UPDATE known_slots SET status = ?2 WHERE slot = ?1",
                                    params![slot, st],
                                )?;
                            }
                            if matches!(ev.status, SlotStatus::Stopped | SlotStatus::Errored | SlotStatus::Backoff) {
                                // Its WebSockets went down with it.
                                tx.execute("DELETE FROM live_sessions WHERE slot = ?1", [&slot])?;
                            }
                            tx.commit()
                        })
                        .await;
                    if let Err(e) = res {
                        warn!(error = %e, "activity: cannot record a lifecycle event");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    warn!(missed = n, "activity: lifecycle events were dropped (too many at once)");
                }
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(RESCAN) => {
                rescan(&store, &sup, &mut known).await;
                forget_stale_live(&store, &sup).await;
            }
        }
    }
}

/// Drop live sessions of slots the supervisor counts no clients for (a
/// disconnect report that never came, e.g. slotgate was killed). Rows
/// younger than a few seconds are left alone: the supervisor hears of a
/// connect just before the store does.
async fn forget_stale_live(store: &ActivityStore, sup: &Supervisor) {
    let idle: Vec<String> = sup
        .list()
        .into_iter()
        .filter(|s| s.clients == 0)
        .map(|s| s.id.to_string())
        .collect();
    let cutoff = now_ms().saturating_sub(5000) as i64;
    let res = store
        .write(move |c| {
            let live: Vec<String> = c
                .prepare_cached("SELECT DISTINCT slot FROM live_sessions WHERE since_ms < ?1")?
                .query_map([cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for slot in live.iter().filter(|s| idle.contains(s)) {
                c.execute(
                    "DELETE FROM live_sessions WHERE slot = ?1 AND since_ms < ?2",
                    params![slot, cutoff],
                )?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = res {
        warn!(error = %e, "activity: cannot prune live sessions");
    }
}

async fn load_known(store: &ActivityStore) -> rusqlite::Result<HashMap<String, Known>> {
    store
        .read(|c| {
            let mut st = c.prepare("SELECT slot, owner, status FROM known_slots")?;
            let rows = st.query_map([], |r| {
                let status: Option<String> = r.get(2)?;
                Ok((
                    r.get::<_, String>(0)?,
                    Known {
                        owner: r.get(1)?,
                        status: status.as_deref().and_then(SlotStatus::parse),
                        gone: false,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
}

fn insert(
    c: &rusqlite::Connection,
    ts_ms: u64,
    slot: &str,
    owner: Option<&str>,
    kind: &str,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO events(ts_ms, slot, owner, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![ts_ms as i64, slot, owner, kind, detail])?;
    Ok(())
}

/// Compare the supervisor's slots with the known ones: new slots are
/// `created`, missing ones `deleted`.
async fn rescan(store: &ActivityStore, sup: &Supervisor, known: &mut HashMap<String, Known>) {
    let now: HashMap<String, (String, u64, SlotStatus)> = sup
        .list()
        .into_iter()
        .map(|s| {
            (
                s.id.to_string(),
                (s.owner.to_string(), s.created_at_ms, s.status),
            )
        })
        .collect();
    let created: Vec<(String, String, u64, SlotStatus)> = now
        .iter()
        .filter(|(id, _)| !known.contains_key(*id))
        .map(|(id, (o, at, st))| (id.clone(), o.clone(), *at, *st))
        .collect();
    known.retain(|id, k| !k.gone || now.contains_key(id));
    let deleted: Vec<(String, Option<String>)> = known
        .iter()
        .filter(|(id, _)| !now.contains_key(*id))
        .map(|(id, k)| (id.clone(), k.owner.clone()))
        .collect();
    // Owners learnt for slots first seen through an event.
    let owners: Vec<(String, String)> = known
        .iter()
        .filter(|(_, k)| k.owner.is_none())
        .filter_map(|(id, _)| now.get(id).map(|(o, _, _)| (id.clone(), o.clone())))
        .collect();
    if created.is_empty() && deleted.is_empty() && owners.is_empty() {
        return;
    }
    for (id, owner, _, _) in &created {
        known.insert(
            id.clone(),
            Known {
                owner: Some(owner.clone()),
                // The event that made us look is still to be classified.
                status: None,
                gone: false,
            },
        );
    }
    for (id, _) in &deleted {
        known.remove(id);
    }
    for (id, owner) in &owners {
        if let Some(k) = known.get_mut(id) {
            k.owner = Some(owner.clone());
        }
    }
    let res = store
        .write(move |c| {
            let tx = c.transaction()?;
            for (id, owner, at, status) in &created {
                insert(&tx, *at, id, Some(owner), "created", None)?;
                tx.execute(
                    "INSERT OR REPLACE INTO known_slots(slot, owner, status) VALUES (?1, ?2, ?3)",
                    params![id, owner, status.as_str()],
                )?;
            }
            for (id, owner) in &deleted {
                insert(&tx, now_ms(), id, owner.as_deref(), "deleted", None)?;
                tx.execute("DELETE FROM known_slots WHERE slot = ?1", [id])?;
                tx.execute("DELETE FROM live_sessions WHERE slot = ?1", [id])?;
            }
            for (id, owner) in &owners {
                tx.execute(
                    "INSERT INTO known_slots(slot, owner) VALUES (?1, ?2)
                     ON CONFLICT(slot) DO UPDATE SET owner = excluded.owner",
                    params![id, owner],
                )?;
            }
            tx.commit()
        })
        .await;
    if let Err(e) = res {
        warn!(error = %e, "activity: cannot record slot creations or deletions");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotapi::SlotId;

    fn ev(status: SlotStatus, reason: Option<&str>) -> Event {
        Event {
            ts_ms: 1,
            slot: SlotId::new("a").unwrap(),
            status,
            pid: Some(7),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn status_changes_become_events() {
        use SlotStatus::*;
        let k = |prev, e: &Event| classify(prev, e).map(|(k, _)| k);
        assert_eq!(k(Some(Starting), &ev(Online, None)), Some("started"));
        assert_eq!(k(Some(Online), &ev(Online, None)), None);
        assert_eq!(
            k(Some(Stopping), &ev(Stopped, Some("idle"))),
            Some("stopped")
        );
        assert_eq!(
            k(Some(Stopping), &ev(Stopped, Some("restart"))),
            Some("restarted")
        );
        assert_eq!(
            k(Some(Stopping), &ev(Stopped, Some("deleted"))),
            Some("deleted")
        );
        assert_eq!(
            k(Some(Online), &ev(Backoff, Some("ttyd ended"))),
            Some("exited")
        );
        assert_eq!(k(Some(Backoff), &ev(Starting, None)), Some("restarted"));
        assert_eq!(k(Some(Stopped), &ev(Starting, None)), None);
        assert_eq!(
            k(Some(Backoff), &ev(Errored, Some("gave up"))),
            Some("errored")
        );
        assert_eq!(
            classify(Some(Backoff), &ev(Errored, Some("gave up")))
                .unwrap()
                .1
                .as_deref(),
            Some("gave up")
        );
    }
}
