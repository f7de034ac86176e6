//! `kdev image` flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::usage;
use crate::image::{Content, Spec};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an OCI image (one reproducible layer) from files and folders, without Docker.
    #[command(
        after_help = "Example:\n  kdev image build -t kdev.local/app:dev --file target/release/app:/app --entrypoint /app -o app.tar"
    )]
    Build(BuildArgs),
    /// Build the swap agent's image from a statically linked kdev (see scripts/build-agent).
    #[command(
        after_help = "Example:\n  scripts/build-agent && kdev image load target/kdev-agent.tar"
    )]
    Agent {
        /// The statically linked kdev to put in the image.
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// The image's reference (default: the one kdev swap uses).
        #[arg(short = 't', long = "tag", value_name = "REF")]
        reference: Option<String>,
        /// Where to write the OCI layout tar.
        #[arg(short = 'o', long, default_value = "kdev-agent.tar")]
        output: PathBuf,
    },
    /// Push an image built by `kdev image build` (or `kdev image agent`) to an OCI registry.
    #[command(
        after_help = "Example (publish the swap agent to a team's registry):\n  scripts/build-agent\n  echo \"$TOKEN\" | kdev image push target/kdev-agent.tar ghcr.io/acme/kdev-agent:0.1.0 -u acme-bot --password-stdin"
    )]
    Push {
        /// The OCI layout tar to push.
        file: PathBuf,
        /// Where to, like registry.example.com/team/app:1.0.
        reference: String,
        /// The registry user (with --password-stdin).
        #[arg(short = 'u', long)]
        username: Option<String>,
        /// Read the password or token from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Speak plain HTTP to a registry that is not on localhost.
        #[arg(long)]
        insecure: bool,
    },
    /// Import an image built by `kdev image build` into a local cluster's real node.
    #[command(after_help = "Example:\n  kdev image load app.tar --name kdev")]
    Load {
        /// The OCI layout tar to import.
        file: PathBuf,
        /// The local cluster.
        #[arg(long, default_value = "kdev", env = "KDEV_CLUSTER")]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The image's reference, like kdev.local/app:1.0.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub reference: String,
    /// A folder's tree, placed at DEST in the image; repeatable.
    #[arg(long = "dir", value_name = "SRC:DEST")]
    pub dirs: Vec<String>,
    /// A file placed at DEST (MODE in octal, else the file's own); repeatable.
    #[arg(long = "file", value_name = "SRC:DEST[:MODE]")]
    pub files: Vec<String>,
    /// A symbolic link PATH pointing to TARGET; repeatable.
    #[arg(long = "link", value_name = "PATH:TARGET")]
    pub links: Vec<String>,
    /// One word of the entrypoint; repeatable, in order.
    #[arg(long = "entrypoint", value_name = "WORD", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// One word of the default arguments; repeatable, in order.
    #[arg(long = "cmd", value_name = "WORD", allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// An environment variable; repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The user the image runs as (UID[:GID]).
    #[arg(long)]
    pub user: Option<String>,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Where to write the OCI layout tar (default: NAME-TAG.tar).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

impl BuildArgs {
    pub fn resolve(self) -> anyhow::Result<(Spec, PathBuf)> {
        crate::image::validate_reference(&self.reference)?;
        let mut contents = Vec::new();
        for spec in &self.dirs {
            let (from, to) = spec.split_once(':').ok_or_else(|| {
                usage(format!(
                    "invalid --dir {spec:?}: use SRC:DEST, like ./www:/www"
                ))
            })?;
            contents.push(Content::Dir {
                from: from.into(),
                to: to.to_owned(),
            });
        }
        for spec in &self.files {
            contents.push(parse_file(spec)?);
        }
        for spec in &self.links {
            let (path, target) = spec.split_once(':').ok_or_else(|| {
                usage(format!(
                    "invalid --link {spec:?}: use PATH:TARGET, like /bin/sh:/bin/busybox"
                ))
            })?;
            contents.push(Content::Link {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        }
        for path in contents.iter().map(|c| match c {
            Content::Dir { to, .. } | Content::File { to, .. } => to,
            Content::Link { path, .. } | Content::EmptyDir { path, .. } => path,
        }) {
            crate::image::layer::image_path(path).map_err(usage)?;
        }
        for env in &self.env {
            if !env.contains('=') {
                return Err(usage(format!("invalid --env {env:?}: use NAME=VALUE")));
            }
        }
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| crate::image::default_output(&self.reference));
        Ok((
            Spec {
                reference: self.reference,
                contents,
                entrypoint: self.entrypoint,
                cmd: self.cmd,
                env: self.env,
                user: self.user,
                workdir: self.workdir,
            },
            output,
        ))
    }
}

/// `SRC:DEST[:MODE]`.
pub fn parse_file(spec: &str) -> anyhow::Result<Content> {
    let bad = || {
        usage(format!(
            "invalid --file {spec:?}: use SRC:DEST[:MODE], like ./app:/app:755"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (from, to, mode) = match parts.as_slice() {
        [from, to] => (*from, *to, None),
        [from, to, mode] => (
            *from,
            *to,
            Some(
                u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(bad)?,
            ),
        ),
        _ => return Err(bad()),
    };
    if from.is_empty() || to.is_empty() {
        return Err(bad());
    }
    Ok(Content::File {
        from: from.into(),
        to: to.to_owned(),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_specs_parse() {
        assert_eq!(
            parse_file("./app:/app:755").expect("valid"),
            Content::File {
                from: "./app".into(),
                to: "/app".into(),
                mode: Some(0o755)
            }
        );
        for bad in ["app", "a:b:999", "a:b:x", ":b", "a:", "a:b:7:7"] {
            assert!(parse_file(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn file_specs_never_panic(spec in proptest::prelude::any::<String>()) {
            let _ = parse_file(&spec);
        }
    }
}
