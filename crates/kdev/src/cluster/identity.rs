//! Identities of the real node's components: each gets a client
//! certificate of its own, signed by the local cluster's CA, instead of the
//! admin's. The kubelet is `system:node:<node>` in `system:nodes` (the Node
//! authorizer and NodeRestriction then hold it to its own node and its own
//! pods' objects), kube-proxy is `system:kube-proxy` (the bootstrap role
//! `system:node-proxier`), CoreDNS is `kdev:coredns` (a ClusterRole of
//! reads, [`COREDNS_ROLE`]). Minted at every `up`: the CA is new with
//! every cluster.

use std::path::Path;

use anyhow::Context as _;

/// Who a certificate names.
pub struct Subject<'a> {
    pub user: &'a str,
    pub group: Option<&'a str>,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// The user CoreDNS reads Services and endpoints as.
pub const COREDNS_USER: &str = "kdev:coredns";

/// What CoreDNS's kubernetes plugin reads, and nothing else.
pub const COREDNS_ROLE: &str = r#"{
  "apiVersion": "rbac.authorization.k8s.io/v1",
  "kind": "ClusterRole",
  "metadata": { "name": "kdev:coredns" },
  "rules": [
    { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"] },
    { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] }
  ]
}"#;

/// Binds [`COREDNS_ROLE`] to [`COREDNS_USER`].
pub const COREDNS_BINDING: &str = r#"{
  "apiVersion": "rbac.authorization.k8s.io/v1",
  "kind": "ClusterRoleBinding",
  "metadata": { "name": "kdev:coredns" },
  "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kdev:coredns" },
  "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kdev:coredns" }]
}"#;

/// A client certificate for `subject`, signed by the CA in `pki`
/// (`ca.crt`, `ca.key`), valid for a year.
pub fn issue(pki: &Path, subject: &Subject<'_>) -> anyhow::Result<Issued> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let failed = |e: rcgen::Error| {
        anyhow::anyhow!("failed to issue a certificate for {}: {e}", subject.user)
    };
    let read = |name: &str| {
        let path = pki.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))
    };
    let ca_cert = read("ca.crt")?;
    let ca_key = signing_key(&read("ca.key")?).map_err(failed)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).map_err(failed)?;

    let today = jiff::Zoned::now().date();
    let day = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let mut params = CertificateParams::new(Vec::new()).map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::CommonName, subject.user);
    if let Some(group) = subject.group {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = day(today.yesterday().unwrap_or(today));
    params.not_after = day(today
        .checked_add(jiff::Span::new().days(365))
        .unwrap_or(today));
    let key = KeyPair::generate().map_err(failed)?;
    let cert = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The CA's key: kwokctl writes RSA keys as PKCS#1 ("RSA PRIVATE KEY"),
/// which ring reads only inside PKCS#8; wrapped here, as `openssl pkcs8
/// -topk8` would.
fn signing_key(pem_text: &str) -> Result<rcgen::KeyPair, rcgen::Error> {
    if !pem_text.contains("BEGIN RSA PRIVATE KEY") {
        return rcgen::KeyPair::from_pem(pem_text);
    }
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let body: String = pem_text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let pkcs1 = engine
        .decode(body.trim())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    let pkcs8 = engine.encode(pkcs8_of_rsa(&pkcs1));
    let mut text = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in pkcs8.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END PRIVATE KEY-----\n");
    rcgen::KeyPair::from_pem_and_sign_algo(&text, &rcgen::PKCS_RSA_SHA256)
}

/// PrivateKeyInfo { version 0, rsaEncryption with NULL parameters, the
/// PKCS#1 key as an OCTET STRING } (RFC 5208), DER.
fn pkcs8_of_rsa(pkcs1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }
    // 1.2.840.113549.1.1.1 and NULL.
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&RSA_ALGORITHM);
    body.extend(tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_user_and_group_and_chains_to_the_ca() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca = CertificateParams::new(Vec::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test-ca");
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).expect("write");
        let issued = issue(
            dir.path(),
            &Subject {
                user: "system:node:kdev-node",
                group: Some("system:nodes"),
            },
        )
        .expect("issued");
        let (_, der) = x509_parser::pem::parse_x509_pem(issued.cert.as_bytes()).expect("pem");
        let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).expect("x509");
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=system:node:kdev-node"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        assert_eq!(cert.issuer().to_string(), "CN=test-ca");
        let (_, ca) = x509_parser::parse_x509_certificate(ca_cert.der()).expect("x509");
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the CA");
    }

    #[test]
    fn a_pkcs1_rsa_key_is_wrapped_as_pkcs8_with_long_lengths() {
        let long = vec![7u8; 1200];
        let der = pkcs8_of_rsa(&long);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x04, 0xc6]);
        assert_eq!(der.len(), 4 + 3 + 15 + 4 + 1200);
        assert_eq!(&der[der.len() - 1200..], &long[..]);
    }
}
