//! Who may use a slot: the owner as slotctl reports it, members and viewers
//! from the identity store, cached for a few seconds so that a burst of
//! requests (page, token, WebSocket) asks slotctl and SQLite once. A user's
//! own `/slot/<user>` that does not exist yet is created here from the
//! default template ("default slot on first visit"). Store reads run on the
//! blocking pool, never on a proxy thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use identity::access::{Role, SlotAcl};
use identity::store::Store;
use slotapi::SlotId;

use crate::config::IdentityConfig;
use crate::identity::Identity;
use crate::slots::{SlotError, Slots};

const CACHE_FOR: Duration = Duration::from_secs(5);

pub use slotapi::config::TEAM_PREFIX;

pub struct SlotAcls {
    slots: Arc<Slots>,
    store: Arc<Store>,
    cache: Mutex<HashMap<SlotId, (Instant, SlotAcl)>>,
    default_template: String,
    create_default: bool,
    demo: Option<SlotId>,
}

impl SlotAcls {
    pub fn new(cfg: &IdentityConfig, slots: Arc<Slots>, store: Arc<Store>) -> SlotAcls {
        SlotAcls {
            slots,
            store,
            cache: Mutex::new(HashMap::new()),
            default_template: cfg.default_template.clone(),
            create_default: cfg.create_default_slot,
            demo: cfg.demo_slot.clone(),
        }
    }

    /// The public read-only demo slot, if one is configured.
    pub fn demo_slot(&self) -> Option<&SlotId> {
        self.demo.as_ref()
    }

    /// Drop a cached access list (after its grants changed).
    pub fn forget(&self, id: &SlotId) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The slot's access list; `None` when the slot does not exist (and is
    /// not the asking user's default slot).
    pub async fn lookup(&self, id: &SlotId, who: &Identity) -> Result<Option<SlotAcl>, SlotError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, acl)) = cache.get(id) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(Some(acl.clone()));
                }
                cache.remove(id);
            }
        }
        let owner = match self.slots.info(id).await {
            Ok(info) => info.owner,
            Err(SlotError::NotFound) => {
                let Some(user) = who.user.as_ref().filter(|u| u.as_str() == id.as_str()) else {
                    return Ok(None);
                };
                // `team-…` ids are team slots (`/team/<team>`), made by an
                // administrator, never someone's default slot.
                if !self.create_default
                    || who.role == Some(Role::Viewer)
                    || id.as_str().starts_with(TEAM_PREFIX)
                {
                    return Ok(None);
                }
                match self.slots.create(id, user, &self.default_template).await {
                    Ok(info) => {
                        tracing::info!(slot = %id, user = %user, template = %self.default_template, "created the user's default slot on first visit");
                        info.owner
                    }
                    // Created concurrently by another request.
                    Err(_) => self.slots.info(id).await?.owner,
                }
            }
            Err(e) => return Err(e),
        };
        let store = Arc::clone(&self.store);
        let (slot, owner_name) = (id.to_string(), owner.to_string());
        let mut acl = tokio::task::spawn_blocking(move || store.acl(&slot, &owner_name))
            .await
            .map_err(|e| SlotError::StartFailed(e.to_string()))?
            .map_err(|e| SlotError::StartFailed(e.to_string()))?;
        acl.public_read = self.demo.as_ref() == Some(id);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), (Instant::now(), acl.clone()));
        Ok(Some(acl))
    }
}
