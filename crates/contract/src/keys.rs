//! Names that kdev writes into the cluster and reads back.

/// The prefix of every kdev-owned annotation and label.
pub const DOMAIN: &str = "kdev.dev";

/// The field manager kdev's writes are recorded under (server-side apply and
/// `managedFields`), so `kubectl get --show-managed-fields` says who did what.
pub const FIELD_MANAGER: &str = "kdev";

/// The standard label saying which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY_LABEL`] on objects kdev creates.
pub const MANAGED_BY_VALUE: &str = "kdev";

/// The name of the Lease the controller replicas elect their leader with, in
/// the controller's own namespace.
pub const CONTROLLER_LEADER_LEASE: &str = "kdev-controller";

/// The ServiceAccount (in the controller's namespace) the dashboard's
/// actions are written as; `deploy/dashboard` binds its rights.
pub const DASHBOARD_ACCOUNT: &str = "kdev-dashboard";

/// The image of kdev's in-cluster helpers (a swap's proxy agent, an
/// environment's wakers) matching this release; `scripts/build-agent` builds
/// it under this name.
pub fn default_agent_image() -> String {
    format!("ghcr.io/kdev-dev/kdev:{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kubernetes_names() {
        // A label value and a Lease name must be DNS-1123 labels.
        for name in [
            MANAGED_BY_VALUE,
            CONTROLLER_LEADER_LEASE,
            FIELD_MANAGER,
            DASHBOARD_ACCOUNT,
        ] {
            assert!(name.len() <= 63, "{name} is too long");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name} is not a DNS-1123 label"
            );
        }
        assert!(DOMAIN.contains('.'));
    }
}
