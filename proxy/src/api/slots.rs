//! `/api/slots…` and `/api/templates`: the slots a caller may see, what they
//! may do with them, and sharing (the identity store's per-slot access
//! lists). A slot the caller may not see answers 404, like one that does
//! not exist.

use std::collections::HashMap;

use http::Method;
use identity::access::{Role, SlotAcl};
use serde::Deserialize;
use serde_json::Value;
use slotapi::{CreateSlot, SlotId, SlotInfo, UserName};

use super::{control_error, err, forbidden, not_found, ok, Api, ApiRequest, Caller};
use crate::pages::{self, Reply};

/// How the caller relates to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Owner,
    Member,
    Viewer,
    /// An administrator on someone else's slot.
    Admin,
}

impl Rel {
    fn as_str(self) -> &'static str {
        match self {
            Rel::Owner => "owner",
            Rel::Member => "member",
            Rel::Viewer => "viewer",
            Rel::Admin => "admin",
        }
    }
    fn may_operate(self) -> bool {
        self != Rel::Viewer
    }
    fn may_manage(self) -> bool {
        matches!(self, Rel::Owner | Rel::Admin)
    }
}

fn relation(who: &Caller, acl: &SlotAcl) -> Option<Rel> {
    let me = who.name();
    if who.user.is_some() && acl.owner == me {
        Some(Rel::Owner)
    } else if who.user.is_some() && acl.members.iter().any(|m| m == me) {
        Some(Rel::Member)
    } else if who.is_admin() {
        Some(Rel::Admin)
    } else if acl.viewers.iter().any(|v| v == me) || acl.public_read {
        Some(Rel::Viewer)
    } else {
        None
    }
}

/// The portal's view of a slot (docs/api.md `SlotView`).
fn view(info: &SlotInfo, acl: &SlotAcl, rel: Rel) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("socket");
        o.insert("access".into(), rel.as_str().into());
        o.insert("url".into(), format!("/slot/{}/", info.id).into());
        let (members, viewers) = if rel == Rel::Viewer {
            (vec![], vec![])
        } else {
            (acl.members.clone(), acl.viewers.clone())
        };
        o.insert("members".into(), members.into());
        o.insert("viewers".into(), viewers.into());
    }
    v
}

fn access_body(acl: &SlotAcl) -> Reply {
    ok(&serde_json::json!({"members": acl.members, "viewers": acl.viewers}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSlot {
    id: String,
    template: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    start: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    level: String,
}

impl Api {
    /// The access list of one slot (owner from slotctl, the rest from the
    /// identity store; empty lists with `auth = "none"`).
    async fn acl_of(&self, info: &SlotInfo) -> Result<SlotAcl, Reply> {
        let owner = info.owner.to_string();
        if self.auth.is_none() {
            return Ok(SlotAcl {
                owner,
                ..Default::default()
            });
        }
        let slot = info.id.to_string();
        self.blocking(move |s| s.acl(&slot, &owner)).await
    }

    /// The slot, its access list and the caller's relation; 404 when the
    /// slot does not exist or the caller may not see it.
    async fn visible(&self, who: &Caller, raw: &str) -> Result<(SlotInfo, SlotAcl, Rel), Reply> {
        let id = SlotId::new(raw).map_err(|_| not_found("No such slot."))?;
        let info = match self.control.get(&id).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => return Err(not_found("No such slot.")),
            Err(e) => return Err(control_error(e)),
        };
        let acl = self.acl_of(&info).await?;
        match relation(who, &acl) {
            Some(rel) => Ok((info, acl, rel)),
            None => Err(not_found("No such slot.")),
        }
    }

    /// 404 unless the caller may see slot `raw` (owner, member, viewer,
    /// admin).
    pub(super) async fn may_see(&self, who: &Caller, raw: &str) -> Result<(), Reply> {
        self.visible(who, raw).await.map(|_| ())
    }

    pub(super) async fn slots(&self, who: &Caller, req: &ApiRequest<'_>, parts: &[&str]) -> Reply {
        let m = req.method;
        let result = match parts {
            [] if m == Method::GET => self.list(who, req).await,
            [] if m == Method::POST => self.create(who, req).await,
            [id] if m == Method::GET => self
                .visible(who, id)
                .await
                .map(|(info, acl, rel)| ok(&view(&info, &acl, rel))),
            [id] if m == Method::DELETE => self.delete(who, id).await,
            [id, action @ ("start" | "stop" | "restart")] if m == Method::POST => {
                self.action(who, id, action).await
            }
            [id, "access"] if m == Method::GET => self.access(who, id, None).await,
            [id, "access", user] if m == Method::PUT => {
                self.access(who, id, Some((user, Some(req)))).await
            }
            [id, "access", user] if m == Method::DELETE => {
                self.access(who, id, Some((user, None))).await
            }
            _ => Err(not_found("No such API route.")),
        };
        result.unwrap_or_else(|r| r)
    }

    async fn list(&self, who: &Caller, req: &ApiRequest<'_>) -> Result<Reply, Reply> {
        let all = self.control.list().await.map_err(control_error)?;
        // Grants in one query: every slot's for an admin, the caller's own
        // otherwise.
        let grants = if self.auth.is_none() {
            vec![]
        } else if who.is_admin() {
            self.blocking(|s| s.access_rows(None)).await?
        } else {
            let me = who.name().to_string();
            let mine = self.blocking(move |s| s.access_rows(Some(&me))).await?;
            // Slots the caller owns list their grants too.
            let owned: Vec<String> = all
                .iter()
                .filter(|i| i.owner.as_str() == who.name())
                .map(|i| i.id.to_string())
                .collect();
            let mut rows = mine;
            if !owned.is_empty() {
                let others = self.blocking(|s| s.access_rows(None)).await?;
                rows.extend(
                    others
                        .into_iter()
                        .filter(|(slot, _, _)| owned.contains(slot)),
                );
            }
            rows
        };
        let mut acls: HashMap<String, SlotAcl> = HashMap::new();
        for info in &all {
            acls.insert(
                info.id.to_string(),
                SlotAcl {
                    owner: info.owner.to_string(),
                    ..Default::default()
                },
            );
        }
        for (slot, user, level) in grants {
            if let Some(acl) = acls.get_mut(&slot) {
                let list = if level == "member" {
                    &mut acl.members
                } else {
                    &mut acl.viewers
                };
                if !list.contains(&user) {
                    list.push(user);
                }
            }
        }
        let owner_filter = req.param("owner");
        let items: Vec<Value> = all
            .iter()
            .filter(|i| {
                owner_filter
                    .as_deref()
                    .is_none_or(|o| i.owner.as_str() == o)
            })
            .filter_map(|i| {
                let acl = &acls[i.id.as_str()];
                relation(who, acl).map(|rel| view(i, acl, rel))
            })
            .collect();
        Ok(ok(&serde_json::json!({ "items": items })))
    }

    /// Template names the caller may create slots from.
    async fn allowed_templates(&self, who: &Caller) -> Result<Vec<(String, String)>, Reply> {
        #[derive(Deserialize)]
        struct Item {
            name: String,
            #[serde(default)]
            description: String,
        }
        #[derive(Deserialize)]
        struct List {
            items: Vec<Item>,
        }
        if who.role == Role::Viewer {
            return Ok(vec![]);
        }
        let list: List = self
            .control
            .get_json("/v1/templates")
            .await
            .map_err(control_error)?;
        Ok(list
            .items
            .into_iter()
            .filter(|t| who.is_admin() || self.user_templates.contains(&t.name))
            .map(|t| (t.name, t.description))
            .collect())
    }

    pub(super) async fn templates(&self, who: &Caller) -> Reply {
        match self.allowed_templates(who).await {
            Ok(list) => {
                let items: Vec<Value> = list
                    .into_iter()
                    .map(|(name, description)| {
                        serde_json::json!({
                            "default": name == self.default_template,
                            "name": name,
                            "description": description,
                        })
                    })
                    .collect();
                ok(&serde_json::json!({ "items": items }))
            }
            Err(r) => r,
        }
    }

    async fn create(&self, who: &Caller, req: &ApiRequest<'_>) -> Result<Reply, Reply> {
        if who.role == Role::Viewer {
            return Err(forbidden("Viewers cannot create slots."));
        }
        let body: NewSlot = req.json()?;
        let owner = match (&body.owner, who.is_admin(), &who.user) {
            (Some(o), true, _) => o.clone(),
            (Some(o), false, Some(me)) if o == me => o.clone(),
            (Some(_), false, _) => {
                return Err(forbidden("You may only create slots for yourself."))
            }
            (None, _, Some(me)) => me.clone(),
            (None, _, None) => {
                return Err(err(
                    400,
                    "bad_request",
                    "Name an \"owner\" (there is no signed-in user).",
                ))
            }
        };
        let owner =
            UserName::new(&owner).map_err(|e| err(400, "bad_request", &format!("owner: {e}")))?;
        let id = SlotId::new(&body.id).map_err(|e| err(400, "bad_slot_id", &format!("id: {e}")))?;
        if !who.is_admin() {
            let me = owner.as_str();
            let suffix = id.as_str().strip_prefix(me);
            if !matches!(suffix, Some("")) && !suffix.is_some_and(|s| s.starts_with('-')) {
                return Err(err(
                    400,
                    "bad_slot_id",
                    &format!("Your slot ids are \"{me}\" or start with \"{me}-\"."),
                ));
            }
        }
        let allowed = self.allowed_templates(who).await?;
        if !allowed.iter().any(|(n, _)| *n == body.template) {
            return Err(err(
                403,
                "template_not_allowed",
                &format!(
                    "You may not create slots from template {:?}.",
                    body.template
                ),
            ));
        }
        if !who.is_admin() {
            let all = self.control.list().await.map_err(control_error)?;
            let owned = all.iter().filter(|i| i.owner == owner).count();
            if owned >= self.max_slots_per_user {
                return Err(err(
                    409,
                    "too_many_slots",
                    &format!(
                        "You already have {owned} slots (at most {}); delete one first.",
                        self.max_slots_per_user
                    ),
                ));
            }
        }
        let create = CreateSlot {
            id,
            template: body.template,
            owner: Some(owner),
            start: body.start.unwrap_or(true),
        };
        let info = self.control.create(&create).await.map_err(control_error)?;
        tracing::info!(slot = %info.id, owner = %info.owner, by = who.name(), "slot created through the API");
        let acl = self.acl_of(&info).await?;
        let rel = relation(who, &acl).unwrap_or(Rel::Admin);
        Ok(pages::json(201, &view(&info, &acl, rel)))
    }

    async fn action(&self, who: &Caller, id: &str, action: &str) -> Result<Reply, Reply> {
        let (info, acl, rel) = self.visible(who, id).await?;
        if !rel.may_operate() {
            return Err(forbidden("Viewers cannot start, stop or restart a slot."));
        }
        let info = self
            .control
            .action(&info.id, action)
            .await
            .map_err(control_error)?;
        tracing::info!(slot = %info.id, action, by = who.name(), access = rel.as_str(), "slot action through the API");
        Ok(ok(&view(&info, &acl, rel)))
    }

    async fn delete(&self, who: &Caller, id: &str) -> Result<Reply, Reply> {
        let (info, acl, rel) = self.visible(who, id).await?;
        if !rel.may_manage() {
            return Err(forbidden(
                "Only the owner or an administrator deletes a slot.",
            ));
        }
        let info = self
            .control
            .delete(&info.id, true)
            .await
            .map_err(control_error)?;
        tracing::info!(slot = %info.id, by = who.name(), "slot deleted through the API");
        Ok(ok(&view(&info, &acl, rel)))
    }

    /// End `user`'s open terminals on `slot` (close code 4003).
    fn close_terminals(&self, slot: &str, user: &str) {
        if let Some(auth) = &self.auth {
            let n = auth.sessions.close_access(slot, user);
            if n > 0 {
                tracing::info!(
                    slot,
                    user,
                    terminals = n,
                    "closed the terminals of removed access"
                );
            }
        }
    }

    /// List (`change = None`), grant (`Some((user, Some(req)))`) or revoke
    /// (`Some((user, None))`) access to a slot.
    async fn access(
        &self,
        who: &Caller,
        id: &str,
        change: Option<(&str, Option<&ApiRequest<'_>>)>,
    ) -> Result<Reply, Reply> {
        let (info, acl, rel) = self.visible(who, id).await?;
        if !rel.may_manage() {
            return Err(forbidden(
                "Only the owner or an administrator shares a slot.",
            ));
        }
        self.store()?;
        let Some((user, grant)) = change else {
            return Ok(access_body(&acl));
        };
        let slot = info.id.to_string();
        let user = user.to_string();
        match grant {
            Some(req) => {
                let g: Grant = req.json()?;
                if !matches!(g.level.as_str(), "viewer" | "member") {
                    return Err(err(
                        400,
                        "bad_request",
                        "level must be \"viewer\" or \"member\".",
                    ));
                }
                if g.level == "member" && !who.is_admin() {
                    return Err(forbidden("Only an administrator adds members."));
                }
                if user == info.owner.as_str() {
                    return Err(err(400, "bad_request", "The owner already has access."));
                }
                // A member made a viewer reconnects read-only.
                let narrowed = g.level == "viewer" && acl.members.contains(&user);
                let (s, u, level) = (slot.clone(), user.clone(), g.level.clone());
                self.blocking(move |st| {
                    if st.user(&u)?.is_none() {
                        return Err(identity::store::StoreError::NoSuchUser(u));
                    }
                    st.grant(&s, &u, &level)
                })
                .await?;
                tracing::info!(slot = %slot, user = %user, level = %g.level, by = who.name(), "slot shared");
                if narrowed {
                    self.close_terminals(&slot, &user);
                }
            }
            None => {
                let (s, u) = (slot.clone(), user.clone());
                let removed = self.blocking(move |st| st.revoke_access(&s, &u)).await?;
                if !removed {
                    return Err(not_found("That user has no access to this slot."));
                }
                tracing::info!(slot = %slot, user = %user, by = who.name(), "slot sharing removed");
                self.close_terminals(&slot, &user);
            }
        }
        if let Some(acls) = &self.acls {
            acls.forget(&info.id);
        }
        let acl = self.acl_of(&info).await?;
        Ok(access_body(&acl))
    }
}
