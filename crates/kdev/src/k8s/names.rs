//! Object names checked the way the API server checks them, so a typo is a
//! usage error (exit 2) before any request.

use crate::error::usage;

/// A DNS-1123 label: namespaces, Services, container names.
pub fn validate_dns_label(what: &str, name: &str) -> anyhow::Result<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid {what} {name:?}: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        )))
    }
}

/// A DNS-1123 subdomain: Deployments, StatefulSets, most other objects. Dots
/// are allowed between labels (`web.v2`).
pub fn validate_subdomain(what: &str, name: &str) -> anyhow::Result<()> {
    if is_subdomain(name) {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid {what} {name:?}: use at most 253 lowercase letters, digits, '-' and '.', \
             each dot-separated part starting and ending with a letter or digit"
        )))
    }
}

pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn is_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dns_labels() {
        for ok in ["default", "team-a", "a1", "x"] {
            assert!(validate_dns_label("namespace", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Team", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_dns_label("namespace", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains_allow_dots_between_labels() {
        for ok in ["web", "web.v2", "a.b.c", "api-1.team"] {
            assert!(is_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            ".web",
            "web.",
            "a..b",
            "Web.v2",
            "a_b.c",
            &"a.".repeat(127),
        ] {
            assert!(!is_subdomain(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn names_never_panic(name in any::<String>()) {
            let _ = validate_dns_label("x", &name);
            let _ = validate_subdomain("x", &name);
        }

        #[test]
        fn a_valid_label_is_a_valid_subdomain(name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert!(is_dns_label(&name));
            prop_assert!(is_subdomain(&name));
        }
    }
}
