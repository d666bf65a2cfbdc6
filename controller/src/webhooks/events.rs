//! The event catalogue (`GET /v1/webhooks/events`): the document's events, grouped as the
//! document groups them, and the ones this product raises on its own (nodes, VPS alerts).

/// One event type.
#[derive(Debug, Clone, Copy)]
pub struct EventInfo {
    /// `node.offline`.
    pub event_type: &'static str,
    pub description: &'static str,
    /// Raised by this release (the others belong to hosting features of later releases; a
    /// webhook may subscribe to them already).
    pub emitted: bool,
}

/// A group of events.
#[derive(Debug, Clone, Copy)]
pub struct Category {
    pub name: &'static str,
    pub events: &'static [EventInfo],
}

const fn ev(event_type: &'static str, description: &'static str, emitted: bool) -> EventInfo {
    EventInfo { event_type, description, emitted }
}

/// The test event of `POST /v1/webhooks/{id}/test`: sent to that webhook only, never
/// subscribed to.
pub const TEST: &str = "webhook.test";

/// `node.online`.
pub const NODE_ONLINE: &str = "node.online";
/// `node.offline`.
pub const NODE_OFFLINE: &str = "node.offline";
/// `system.service_failed`.
pub const SERVICE_FAILED: &str = "system.service_failed";
/// `system.disk_warning`.
pub const DISK_WARNING: &str = "system.disk_warning";
/// `vps.alert`.
pub const VPS_ALERT: &str = "vps.alert";
/// `user.created`.
pub const USER_CREATED: &str = "user.created";
/// `user.deleted`.
pub const USER_DELETED: &str = "user.deleted";
/// `quota.exhausted`: a proxy or WireGuard client used up its traffic quota and its node's
/// agent cut it off.
pub const QUOTA_EXHAUSTED: &str = "quota.exhausted";
/// `client.expired`: a proxy or WireGuard client passed its expiry and was cut off.
pub const CLIENT_EXPIRED: &str = "client.expired";

/// Every event a webhook may subscribe to, by category.
pub static CATALOGUE: &[Category] = &[
    Category {
        name: "User Events",
        events: &[
            ev(USER_CREATED, "Triggered when a new user is created", true),
            ev(USER_DELETED, "Triggered when a user is deleted", true),
        ],
    },
    Category {
        name: "Domain Events",
        events: &[
            ev("domain.created", "Triggered when a domain is added", false),
            ev("domain.deleted", "Triggered when a domain is removed", false),
        ],
    },
    Category {
        name: "Security Events",
        events: &[ev("security.ip_blocked", "Triggered when an IP address is blocked", false)],
    },
    Category { name: "Backup Events", events: &[ev("backup.failed", "Triggered when a backup fails", false)] },
    Category {
        name: "SSL Events",
        events: &[ev("ssl.expiring_soon", "Triggered when an SSL certificate is about to expire", false)],
    },
    Category {
        name: "System Events",
        events: &[
            ev(SERVICE_FAILED, "Triggered when a watched systemd service on a node enters the failed state", true),
            ev(DISK_WARNING, "Triggered when a node's disk usage passes the warning threshold", true),
        ],
    },
    Category {
        name: "Node Events",
        events: &[
            ev(NODE_ONLINE, "Triggered when a node's agent connects to the controller", true),
            ev(NODE_OFFLINE, "Triggered when a node's agent link ends", true),
        ],
    },
    Category {
        name: "Traffic Events",
        events: &[
            ev(
                QUOTA_EXHAUSTED,
                "Triggered when a proxy or WireGuard client uses up its traffic quota and is cut off",
                true,
            ),
            ev(CLIENT_EXPIRED, "Triggered when a proxy or WireGuard client passes its expiry and is cut off", true),
        ],
    },
    Category {
        name: "VPS Events",
        events: &[ev(VPS_ALERT, "Triggered when a VPS passes its CPU, memory or disk alert threshold", true)],
    },
];

/// Whether `event_type` is in the catalogue.
pub fn is_known(event_type: &str) -> bool {
    CATALOGUE.iter().flat_map(|c| c.events).any(|e| e.event_type == event_type)
}

/// Every event type of the catalogue.
pub fn all() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().flat_map(|c| c.events).map(|e| e.event_type)
}

/// A title for people (chat destinations).
pub fn title(event_type: &str) -> String {
    match event_type {
        TEST => "Test event".into(),
        NODE_ONLINE => "Node online".into(),
        NODE_OFFLINE => "Node offline".into(),
        SERVICE_FAILED => "Service failed".into(),
        DISK_WARNING => "Disk warning".into(),
        VPS_ALERT => "VPS alert".into(),
        USER_CREATED => "User created".into(),
        USER_DELETED => "User deleted".into(),
        QUOTA_EXHAUSTED => "Quota exhausted".into(),
        CLIENT_EXPIRED => "Client expired".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_has_the_documented_events_once_each() {
        for t in [
            "user.created",
            "user.deleted",
            "domain.created",
            "domain.deleted",
            "security.ip_blocked",
            "backup.failed",
            "system.service_failed",
            "system.disk_warning",
            "ssl.expiring_soon",
            "node.online",
            "node.offline",
            "vps.alert",
            "quota.exhausted",
            "client.expired",
        ] {
            assert_eq!(all().filter(|e| *e == t).count(), 1, "{t}");
        }
        assert!(!is_known(TEST));
    }
}
