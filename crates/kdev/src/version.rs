//! `kdev version`.

use std::process::ExitCode;

use crate::k8s;

pub async fn run(flags: &k8s::Flags, client_only: bool) -> anyhow::Result<ExitCode> {
    println!("kdev {}", env!("CARGO_PKG_VERSION"));
    if client_only {
        return Ok(ExitCode::SUCCESS);
    }
    let kube = k8s::connect(flags).await?;
    let info = kube
        .client
        .apiserver_version()
        .await
        .map_err(|err| kube.explain(err, "read the API server's version"))?;
    println!("server {} ({})", info.git_version, kube.server);
    Ok(ExitCode::SUCCESS)
}
