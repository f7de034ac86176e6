//! What the dashboard checks of every request before it serves or acts, as
//! pure functions of the request's headers.
//!
//! - **Host** (DNS rebinding): only the names it is served as are answered:
//!   loopback (`localhost`, `127.0.0.0/8`, `[::1]`, any port: `kdev envs
//!   dashboard`'s port-forward) and the external hosts the team names with
//!   `--dashboard-host` (the auth proxy's). A page of another name that
//!   resolves to the dashboard gets neither a token nor an action.
//! - **Origin** on every POST: when a browser says where the form came
//!   from, it must be this same host; a cross-site fetch mark is refused.
//!   Clients that send neither (curl, scripts) still need the token.
//! - **The form token** (double-submit): the page sets a random token in a
//!   `SameSite=Strict` cookie and puts the same token in its forms; an
//!   action needs both, equal. Any replica checks it without shared state,
//!   so two replicas behind one Service accept each other's pages, and a
//!   restart does not void an open page. Another site can neither read the
//!   cookie nor send it along.
//! - **Framing**: every answer forbids being framed.

use axum::http::{HeaderMap, HeaderValue, header};

/// The cookie that carries the form token.
pub const TOKEN_COOKIE: &str = "kdev-dashboard-token";
/// A token's length: 128 random bits in hex.
const TOKEN_LEN: usize = 32;

/// Headers every answer carries: no framing, no sniffing, no referrer to
/// other sites.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The host part of a `Host` header or an origin's authority, lowercased;
/// `None` when it is not one.
fn host_of(authority: &str) -> Option<String> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(authority.host().to_ascii_lowercase())
}

/// Whether a request's `Host` names the dashboard: a loopback name, or one
/// of the configured external hosts (compared without the port).
pub fn allowed_host(host: Option<&str>, external: &[String]) -> bool {
    let Some(name) = host.and_then(host_of) else {
        return false;
    };
    if name == "localhost" {
        return true;
    }
    let bare = name
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&name);
    if bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
    {
        return true;
    }
    external.iter().any(|e| e.eq_ignore_ascii_case(&name))
}

/// Why a POST's origin is refused, if it is: an `Origin` that is not this
/// host (or is `null`), or a browser's `Sec-Fetch-Site: cross-site`.
pub fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        // scheme://host[:port], nothing after.
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .filter(|rest| !rest.contains('/'));
        let same = authority.is_some_and(|a| a.eq_ignore_ascii_case(&host));
        if !same {
            return Some(format!(
                "the form was posted from {origin}, not from {host}"
            ));
        }
    }
    let cross = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    cross.then(|| "the form was posted from another site".to_owned())
}

/// The form token a request's cookie carries, when it carries a
/// well-formed one.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| value.len() == TOKEN_LEN && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new random token.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The `Set-Cookie` value that gives the browser `token`. Not `Secure`: the
/// dashboard is also served over plain HTTP on loopback (a port-forward).
pub fn set_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; Path=/; SameSite=Strict; HttpOnly")
}

/// Whether an action's form token matches its cookie's, compared in
/// constant time.
pub fn token_matches(headers: &HeaderMap, form_token: &str) -> bool {
    let Some(cookie) = cookie_token(headers) else {
        return false;
    };
    cookie.len() == form_token.len()
        && cookie
            .bytes()
            .zip(form_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        map
    }

    /// Regression: any Host was answered, so a page whose name resolved to
    /// the dashboard (DNS rebinding) could read tokens and act.
    #[test]
    fn only_loopback_names_and_configured_hosts_are_served() {
        let external = vec!["kdev.example.com".to_owned()];
        for ok in [
            "127.0.0.1:8081",
            "localhost:8081",
            "LOCALHOST",
            "[::1]:8081",
            "127.9.9.9",
            "kdev.example.com",
            "KDEV.example.com:443",
        ] {
            assert!(allowed_host(Some(ok), &external), "{ok}");
        }
        for bad in [
            "evil.test",
            "evil.test:8081",
            "127.0.0.1.evil.test",
            "localhost.evil.test",
            "example.com",
            "user@127.0.0.1",
            "",
        ] {
            assert!(!allowed_host(Some(bad), &external), "{bad}");
        }
        assert!(!allowed_host(None, &external));
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let host = ("host", "127.0.0.1:8081");
        assert_eq!(foreign_origin(&headers(&[host])), None);
        assert_eq!(
            foreign_origin(&headers(&[host, ("origin", "http://127.0.0.1:8081")])),
            None
        );
        for origin in [
            "http://evil.test",
            "http://127.0.0.1:9999",
            "null",
            "http://127.0.0.1:8081/x",
        ] {
            assert!(
                foreign_origin(&headers(&[host, ("origin", origin)])).is_some(),
                "{origin}"
            );
        }
        assert!(foreign_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])).is_some());
        assert_eq!(
            foreign_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])),
            None
        );
    }

    #[test]
    fn the_token_is_the_cookies_and_must_match() {
        let token = new_token();
        let cookie = format!("a=b; {TOKEN_COOKIE}={token}; c=d");
        let with = headers(&[("cookie", &cookie)]);
        assert_eq!(cookie_token(&with), Some(token.clone()));
        assert!(token_matches(&with, &token));
        assert!(!token_matches(&with, &new_token()));
        assert!(!token_matches(&with, ""));
        assert!(
            !token_matches(&HeaderMap::new(), &token),
            "no cookie, no action"
        );
        let short = headers(&[("cookie", "kdev-dashboard-token=abc")]);
        assert_eq!(cookie_token(&short), None);
        assert!(!token_matches(&short, "abc"));
        assert!(set_cookie(&token).contains("SameSite=Strict"));
    }

    proptest! {
        #[test]
        fn headers_never_panic(host in any::<String>(), origin in any::<String>(), cookie in any::<String>()) {
            let _ = allowed_host(Some(&host), &[]);
            let mut map = HeaderMap::new();
            for (name, value) in [("host", &host), ("origin", &origin), ("cookie", &cookie)] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    map.insert(name, value);
                }
            }
            let _ = foreign_origin(&map);
            let _ = cookie_token(&map);
            let _ = token_matches(&map, &cookie);
        }
    }
}
