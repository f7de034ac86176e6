//! One image layer as a reproducible tar: the same inputs always give the
//! same bytes, so the same digest.
//!
//! Entries are sorted by path; every header has mtime 0, owner 0:0 and no
//! user or group names; parent folders are added (0755) where the inputs do
//! not name them; the gzip header carries no time and no file name. Layers
//! are compressed fast: they are built on the machine that loads them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// What goes into the layer, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A folder's whole tree, placed at `to`.
    Dir { from: PathBuf, to: String },
    /// One file at `to`, with its own mode unless `mode` says otherwise.
    File {
        from: PathBuf,
        to: String,
        mode: Option<u32>,
    },
    /// A symbolic link at `path` pointing to `target`.
    Link { path: String, target: String },
    /// An empty folder at `path` with `mode` (like 0o1777 for /tmp).
    EmptyDir { path: String, mode: u32 },
}

/// One entry of the layer.
#[derive(Clone, Debug)]
enum Entry {
    Dir { mode: u32 },
    File { source: PathBuf, mode: u32 },
    Link { target: String },
}

/// The layer, built: the gzip bytes and the digest of the tar inside
/// (`diff_id`, which the image config records).
pub struct Layer {
    pub gzip: Vec<u8>,
    pub diff_id: String,
}

/// Normalises an image path: absolute, no `.`/`..`, no trailing slash;
/// returned without the leading slash (tar paths are relative).
pub fn image_path(path: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        path.starts_with('/'),
        "image path {path:?} must be absolute, like /bin/app"
    );
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    anyhow::ensure!(
        parts.iter().all(|p| *p != "." && *p != ".."),
        "image path {path:?} must not contain . or .."
    );
    anyhow::ensure!(
        !parts.is_empty(),
        "image path {path:?} names the root itself"
    );
    Ok(parts.join("/"))
}

/// Builds the layer from `contents`; later contents replace earlier ones at
/// the same path.
pub fn build(contents: &[Content]) -> anyhow::Result<Layer> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for content in contents {
        match content {
            Content::Dir { from, to } => {
                let base = image_path(to)?;
                walk(from, &base, &mut entries)?;
            }
            Content::File { from, to, mode } => {
                let meta = std::fs::metadata(from)
                    .with_context(|| format!("failed to read {}", from.display()))?;
                anyhow::ensure!(meta.is_file(), "{} is not a file", from.display());
                let mode = mode.unwrap_or(meta.permissions().mode() & 0o7777);
                entries.insert(
                    image_path(to)?,
                    Entry::File {
                        source: from.clone(),
                        mode,
                    },
                );
            }
            Content::Link { path, target } => {
                entries.insert(
                    image_path(path)?,
                    Entry::Link {
                        target: target.clone(),
                    },
                );
            }
            Content::EmptyDir { path, mode } => {
                entries.insert(image_path(path)?, Entry::Dir { mode: *mode });
            }
        }
    }
    // Every parent folder exists in the layer.
    let paths: Vec<String> = entries.keys().cloned().collect();
    for path in paths {
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            parent = dir.parent();
        }
    }

    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())
            }
            Entry::File { source, mode } => {
                let bytes = std::fs::read(source)
                    .with_context(|| format!("failed to read {}", source.display()))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())
            }
            Entry::Link { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, path, target)
            }
        }
        .with_context(|| format!("failed to add {path} to the layer"))?;
    }
    let tar = tar.into_inner().context("failed to finish the layer")?;
    let diff_id = super::sha256(&tar);
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&tar)
        .context("failed to compress the layer")?;
    let gzip = gzip.finish().context("failed to compress the layer")?;
    Ok(Layer { gzip, diff_id })
}

/// Adds the tree under `dir` at `base` (a normalised image path).
fn walk(dir: &Path, base: &str, entries: &mut BTreeMap<String, Entry>) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a folder", dir.display());
    entries.insert(
        base.to_owned(),
        Entry::Dir {
            mode: meta.permissions().mode() & 0o7777,
        },
    );
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to list {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        let path = format!("{base}/{name}");
        let source = child.path();
        let meta = std::fs::symlink_metadata(&source)
            .with_context(|| format!("failed to read {}", source.display()))?;
        if meta.is_dir() {
            walk(&source, &path, entries)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&source)
                .with_context(|| format!("failed to read link {}", source.display()))?;
            entries.insert(
                path,
                Entry::Link {
                    target: target.to_string_lossy().into_owned(),
                },
            );
        } else if meta.is_file() {
            entries.insert(
                path,
                Entry::File {
                    source,
                    mode: meta.permissions().mode() & 0o7777,
                },
            );
        }
        // Sockets, fifos and devices have no place in an image layer.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_and_plain() {
        assert_eq!(image_path("/bin/app").expect("valid"), "bin/app");
        assert_eq!(image_path("/etc//x/").expect("valid"), "etc/x");
        for bad in ["bin/app", "/", "/a/../b", "/./a", ""] {
            assert!(image_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_parents_are_added() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("app");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let contents = [
            Content::File {
                from: file.clone(),
                to: "/usr/local/bin/app".into(),
                mode: None,
            },
            Content::Link {
                path: "/bin/app".into(),
                target: "/usr/local/bin/app".into(),
            },
        ];
        let a = build(&contents).expect("layer");
        // A later mtime on the source changes nothing.
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").expect("rewrite");
        let b = build(&contents).expect("layer");
        assert_eq!(a.gzip, b.gzip);
        assert_eq!(a.diff_id, b.diff_id);

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.gzip.as_slice()));
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/app",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/app"
            ]
        );

        std::fs::write(&file, b"changed\n").expect("change");
        assert_ne!(build(&contents).expect("layer").diff_id, a.diff_id);
    }

    proptest::proptest! {
        #[test]
        fn image_paths_never_panic(path in proptest::prelude::any::<String>()) {
            let _ = image_path(&path);
        }
    }
}
