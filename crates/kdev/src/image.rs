//! `kdev image`: OCI images built without Docker.
//!
//! An image here is one reproducible layer ([`layer`]) plus its config,
//! manifest and index, written as an OCI image layout in a tar file, which
//! containerd imports (`kdev image load`) and registries take
//! (`kdev image push`, later). The same inputs always give the same digest.
//! The formats are `oci-spec`'s types.

pub mod layer;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

pub use self::layer::Content;

/// The annotation containerd names an imported image by.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a tag within a layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The full reference, like `kdev.local/busybox:1.35`.
    pub reference: String,
    pub contents: Vec<Content>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=VALUE` pairs.
    pub env: Vec<String>,
    /// `UID[:GID]` or a name.
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// A built image: the OCI layout as a tar, and its manifest digest.
pub struct Built {
    pub layout: Vec<u8>,
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Checks an image reference enough to catch typos: `[HOST/]PATH[:TAG]`,
/// lowercase path, a tag of letters, digits, `_`, `.` and `-`.
pub fn validate_reference(reference: &str) -> anyhow::Result<()> {
    let bad = |why: &str| {
        crate::error::usage(format!(
            "invalid image reference {reference:?}: {why}; write it like kdev.local/app:1.0"
        ))
    };
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    };
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(bad("the name is empty or has an empty part"));
    }
    let path_ok = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    // The first part may be a registry host (with a port or upper case).
    let host_like = first.contains('.') || first.contains(':') || first == "localhost";
    if !host_like && !path_ok(first) {
        return Err(bad(
            "the name must be lowercase letters, digits, '.', '_' and '-'",
        ));
    }
    if !parts.all(path_ok) {
        return Err(bad(
            "the name must be lowercase letters, digits, '.', '_' and '-'",
        ));
    }
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(bad(
                "the tag must be 1 to 128 letters, digits, '_', '.' and '-'",
            ));
        }
    }
    Ok(())
}

/// The architecture of this machine in OCI's words.
fn arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_owned()),
    }
}

/// Builds the image described by `spec`.
pub fn build(spec: &Spec) -> anyhow::Result<Built> {
    validate_reference(&spec.reference)?;
    let layer = layer::build(&spec.contents)?;
    let layer_digest = sha256(&layer.gzip);

    let mut config = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        config = config.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        config = config.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        config = config.env(spec.env.clone());
    }
    if let Some(user) = &spec.user {
        config = config.user(user.clone());
    }
    if let Some(workdir) = &spec.workdir {
        config = config.working_dir(workdir.clone());
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(arch())
        .os(Os::Linux)
        .config(config.build().context("failed to build the image config")?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.diff_id.clone()])
                .build()
                .context("failed to build the image's rootfs")?,
        )
        .build()
        .context("failed to build the image configuration")?;
    let config_bytes = canonical_json(&config).context("failed to encode the image config")?;
    let config_digest = sha256(&config_bytes);

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_bytes,
            &config_digest,
        )?)
        .layers(vec![descriptor(
            MediaType::ImageLayerGzip,
            &layer.gzip,
            &layer_digest,
        )?])
        .build()
        .context("failed to build the image manifest")?;
    let manifest_bytes =
        canonical_json(&manifest).context("failed to encode the image manifest")?;
    let manifest_digest = sha256(&manifest_bytes);

    let tag = spec
        .reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag);
    let mut named = descriptor(MediaType::ImageManifest, &manifest_bytes, &manifest_digest)?;
    named.set_annotations(Some(HashMap::from([
        (CONTAINERD_NAME.to_owned(), spec.reference.clone()),
        (REF_NAME.to_owned(), tag.to_owned()),
    ])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![named])
        .build()
        .context("failed to build the image index")?;
    let index_bytes = canonical_json(&index).context("failed to encode the image index")?;

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), index_bytes),
    ];
    for (digest, bytes) in [
        (&layer_digest, layer.gzip),
        (&config_digest, config_bytes),
        (&manifest_digest, manifest_bytes),
    ] {
        files.push((blob_path(digest), bytes));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_size(0);
        tar.append_data(&mut header, dir, std::io::empty())
            .context("failed to write the image layout")?;
    }
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, &path, bytes.as_slice())
            .with_context(|| format!("failed to write {path} into the image layout"))?;
    }
    Ok(Built {
        layout: tar
            .into_inner()
            .context("failed to finish the image layout")?,
        digest: manifest_digest,
    })
}

/// JSON with object keys sorted: oci-spec keeps annotations in a HashMap,
/// whose order changes from run to run, and the bytes must not.
fn canonical_json(value: &impl serde::Serialize) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn descriptor(media_type: MediaType, bytes: &[u8], digest: &str) -> anyhow::Result<Descriptor> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .size(bytes.len() as u64)
        .digest(
            digest
                .parse::<oci_spec::image::Digest>()
                .context("failed to encode a digest")?,
        )
        .build()
        .context("failed to build a descriptor")
}

/// Builds `spec` and writes the layout tar to `out`; prints the digest.
pub fn build_to(spec: &Spec, out: &Path) -> anyhow::Result<ExitCode> {
    let built = build(spec)?;
    let mut file = std::fs::File::create(out)
        .with_context(|| format!("failed to create {}", out.display()))?;
    file.write_all(&built.layout)
        .with_context(|| format!("failed to write {}", out.display()))?;
    println!("{} {}", spec.reference, built.digest);
    eprintln!(
        "kdev: wrote {} ({} bytes); load it with `kdev image load {}`",
        out.display(),
        built.layout.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The images every real node gets, named as its pods ask for them.
pub mod builtin {
    use super::*;

    /// The sandbox image containerd pins, from the pause binary the install
    /// script built from Kubernetes' own `pause.c`.
    pub fn pause(binary: &Path, reference: &str) -> Spec {
        Spec {
            reference: reference.to_owned(),
            contents: vec![Content::File {
                from: binary.to_owned(),
                to: "/pause".into(),
                mode: Some(0o755),
            }],
            entrypoint: vec!["/pause".into()],
            user: Some("65535:65535".into()),
            ..Spec::default()
        }
    }

    /// Debian's static busybox with the applets tests and demos use.
    pub fn busybox(binary: &Path, reference: &str) -> Spec {
        let mut contents = vec![Content::File {
            from: binary.to_owned(),
            to: "/bin/busybox".into(),
            mode: Some(0o755),
        }];
        for applet in BUSYBOX_APPLETS {
            contents.push(Content::Link {
                path: format!("/bin/{applet}"),
                target: "/bin/busybox".into(),
            });
        }
        contents.push(Content::EmptyDir {
            path: "/tmp".into(),
            mode: 0o1777,
        });
        Spec {
            reference: reference.to_owned(),
            contents,
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            ..Spec::default()
        }
    }

    /// The applets linked in the busybox image (its `wget` is left out: the
    /// Debian 1.35 static build crashes).
    pub const BUSYBOX_APPLETS: &[&str] = &[
        "sh", "cat", "echo", "env", "ls", "mkdir", "rm", "mv", "cp", "sleep", "tail", "head",
        "httpd", "nc", "nslookup", "hostname", "id", "ps", "kill", "date", "seq", "wc", "grep",
        "sed", "true", "false", "test", "printf", "touch", "ln", "tee", "yes", "dd", "uname",
    ];

    /// CoreDNS, for the node's cluster DNS.
    pub fn coredns(binary: &Path, reference: &str) -> Spec {
        Spec {
            reference: reference.to_owned(),
            contents: vec![Content::File {
                from: binary.to_owned(),
                to: "/coredns".into(),
                mode: Some(0o755),
            }],
            entrypoint: vec!["/coredns".into()],
            user: Some("65532:65532".into()),
            ..Spec::default()
        }
    }

    /// kdev itself (a statically linked build), as the swap agent's image.
    pub fn agent(binary: &Path, reference: &str) -> Spec {
        Spec {
            reference: reference.to_owned(),
            contents: vec![Content::File {
                from: binary.to_owned(),
                to: "/kdev".into(),
                mode: Some(0o755),
            }],
            entrypoint: vec!["/kdev".into()],
            user: Some("65532:65532".into()),
            ..Spec::default()
        }
    }
}

/// True when `elf` is an ELF executable with no program interpreter (a
/// statically linked binary, which runs in an image with nothing else).
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let read_u32 = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let read_u64 = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only (what kdev builds for).
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * usize::from(phentsize)));
        at.and_then(read_u32).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// `kdev image agent`: the swap agent's image from a statically linked kdev.
pub fn agent_image(binary: &Path, reference: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(binary).with_context(|| format!("failed to read {}", binary.display()))?;
    if !is_static_elf(&bytes) {
        return Err(crate::error::usage(format!(
            "{} is not a statically linked kdev, so it cannot run in the agent image; \
             build one with scripts/build-agent (cargo build --release --target x86_64-unknown-linux-gnu \
             with RUSTFLAGS=\"-C target-feature=+crt-static\") and pass it with --binary",
            binary.display()
        )));
    }
    build_to(&builtin::agent(binary, reference), out)
}

/// Credentials for a registry.
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: String },
}

/// `kdev image push`: uploads an image built by `kdev image build` (its
/// layout tar) to `target` in any OCI registry, keeping its manifest digest.
/// Registries on localhost or 127.x are spoken to over plain HTTP, as Docker
/// does; any other over HTTPS unless `insecure`.
pub async fn push(
    file: &Path,
    target: &str,
    credentials: Credentials,
    insecure: bool,
) -> anyhow::Result<ExitCode> {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::OciImageManifest;
    use oci_client::secrets::RegistryAuth;

    validate_reference(target)?;
    let reference: oci_client::Reference = target
        .parse()
        .map_err(|err| crate::error::usage(format!("invalid image reference {target:?}: {err}")))?;
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let files = read_layout(&bytes).with_context(|| {
        format!(
            "{} is not an image built by `kdev image build`",
            file.display()
        )
    })?;
    let index: oci_spec::image::ImageIndex = serde_json::from_slice(
        files
            .get("index.json")
            .context("the layout has no index.json")?,
    )
    .context("the layout's index.json cannot be read")?;
    let named = index
        .manifests()
        .first()
        .context("the layout's index names no image")?;
    let local_digest = named.digest().to_string();
    let blob = |digest: &str| {
        files
            .get(&blob_path(digest))
            .with_context(|| format!("the layout lacks blob {digest}"))
    };
    let manifest_bytes = blob(&local_digest)?;
    let manifest: OciImageManifest =
        serde_json::from_slice(manifest_bytes).context("the image manifest cannot be read")?;
    let config = Config::new(
        blob(&manifest.config.digest)?.clone(),
        manifest.config.media_type.clone(),
        None,
    );
    let layers: Vec<ImageLayer> = manifest
        .layers
        .iter()
        .map(|layer| {
            Ok(ImageLayer::new(
                blob(&layer.digest)?.clone(),
                layer.media_type.clone(),
                None,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    // reqwest under oci-client takes the process's TLS provider; kdev uses
    // ring everywhere (kube does). Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_owned();
    let plain = insecure || is_loopback_registry(&registry);
    let client = oci_client::Client::new(ClientConfig {
        protocol: if plain {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    });
    let auth = match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => RegistryAuth::Basic(username, password),
    };
    let step = crate::progress::Step::start(format!("pushing {} to {target}", file.display()));
    client
        .push(&reference, &layers, config, &auth, Some(manifest))
        .await
        .map_err(|err| anyhow::anyhow!("failed to push {} to {target}: {err}", file.display()))?;
    step.done();
    println!("{target} {local_digest}");
    Ok(ExitCode::SUCCESS)
}

/// True when a registry's `host[:port]` is this machine's loopback:
/// `localhost`, an address in 127.0.0.0/8, or `[::1]`. The host is parsed,
/// never matched by prefix: `127.example.com` is a name like any other.
pub fn is_loopback_registry(registry: &str) -> bool {
    let Ok(authority) = registry.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = authority.host();
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The files of an OCI layout tar, by path.
fn read_layout(bytes: &[u8]) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        files.insert(path, data);
    }
    Ok(files)
}

/// Where `kdev image build -o` writes by default: `<name>-<tag>.tar`.
pub fn default_output(reference: &str) -> PathBuf {
    let file: String = reference
        .rsplit('/')
        .next()
        .unwrap_or(reference)
        .chars()
        .map(|c| if c == ':' { '-' } else { c })
        .collect();
    PathBuf::from(format!("{file}.tar"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> Spec {
        let file = dir.join("app");
        std::fs::write(&file, b"binary").expect("write");
        Spec {
            reference: "kdev.local/app:1.0".into(),
            contents: vec![Content::File {
                from: file,
                to: "/app".into(),
                mode: Some(0o755),
            }],
            entrypoint: vec!["/app".into()],
            env: vec!["MODE=test".into()],
            user: Some("65532".into()),
            ..Spec::default()
        }
    }

    #[test]
    fn digests_are_reproducible_and_depend_on_every_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = build(&spec(dir.path())).expect("image");
        let b = build(&spec(dir.path())).expect("image");
        assert_eq!(a.digest, b.digest);
        assert!(a.layout == b.layout, "the layout tars differ");
        let mut other = spec(dir.path());
        other.env = vec!["MODE=prod".into()];
        assert_ne!(build(&other).expect("image").digest, a.digest);
    }

    #[test]
    fn the_layout_names_the_image_and_holds_every_blob() {
        let dir = tempfile::tempdir().expect("temp dir");
        let built = build(&spec(dir.path())).expect("image");
        let mut archive = tar::Archive::new(built.layout.as_slice());
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
            files.insert(path, bytes);
        }
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&files["index.json"]).expect("index");
        let named = &index.manifests()[0];
        let annotations = named.annotations().clone().expect("annotations");
        assert_eq!(annotations[CONTAINERD_NAME], "kdev.local/app:1.0");
        assert_eq!(annotations[REF_NAME], "1.0");
        assert_eq!(named.digest().to_string(), built.digest);
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&files[&blob_path(&built.digest)]).expect("manifest");
        let config_bytes = &files[&blob_path(manifest.config().digest().as_ref())];
        assert_eq!(sha256(config_bytes), manifest.config().digest().to_string());
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(config_bytes).expect("config");
        let runtime = config.config().clone().expect("runtime config");
        assert_eq!(runtime.entrypoint().clone(), Some(vec!["/app".to_owned()]));
        assert_eq!(runtime.user().clone(), Some("65532".to_owned()));
        let layer = &files[&blob_path(manifest.layers()[0].digest().as_ref())];
        assert_eq!(sha256(layer), manifest.layers()[0].digest().to_string());
    }

    #[test]
    fn only_static_executables_pass_as_the_agent() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        // Test binaries are dynamically linked unless built with crt-static.
        let interp = me.windows(b"ld-linux".len()).any(|w| w == b"ld-linux");
        assert_eq!(is_static_elf(&me), !interp);
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[]));
    }

    #[test]
    fn references_are_checked() {
        for ok in [
            "busybox",
            "kdev.local/busybox:1.35",
            "localhost:5000/team/app:v1",
            "ghcr.io/a/b",
        ] {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Busybox", "a//b", "app:", "app:bad tag", "/app"] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(
            default_output("kdev.local/busybox:1.35"),
            PathBuf::from("busybox-1.35.tar")
        );
    }

    /// Regression: "local" was a host starting with `127.`, so
    /// `127.example.com` got plain HTTP and `[::1]` did not.
    #[test]
    fn only_loopback_registries_are_spoken_to_over_plain_http() {
        for local in [
            "localhost:5000",
            "LOCALHOST",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
        ] {
            assert!(is_loopback_registry(local), "{local}");
        }
        for remote in [
            "127.example.com:5000",
            "127.0.0.1.nip.io",
            "localhost.example.com",
            "10.0.0.1:5000",
            "[fd00::1]:5000",
            "ghcr.io",
            "",
            "a b",
        ] {
            assert!(!is_loopback_registry(remote), "{remote}");
        }
    }

    proptest::proptest! {
        #[test]
        fn registry_hosts_never_panic(registry in proptest::prelude::any::<String>()) {
            let _ = is_loopback_registry(&registry);
        }

        #[test]
        fn elf_headers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1];
            elf.extend(bytes);
            let _ = is_static_elf(&elf);
        }

        #[test]
        fn references_never_panic(reference in proptest::prelude::any::<String>()) {
            let _ = validate_reference(&reference);
            let _ = default_output(&reference);
        }
    }
}
