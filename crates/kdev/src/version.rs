//! `kdev version`.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, VersionArgs};
use crate::kubeclient;

pub async fn run(global: &GlobalArgs, args: VersionArgs) -> anyhow::Result<ExitCode> {
    println!("kdev {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    let kube = kubeclient::connect(global).await?;
    let info = kube
        .client
        .apiserver_version()
        .await
        .map_err(|err| kube.explain(err, "read the API server's version"))?;
    println!("server {} ({})", info.git_version, kube.server);
    Ok(ExitCode::SUCCESS)
}
