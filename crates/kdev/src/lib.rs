//! kdev: develop against Kubernetes.
//!
//! `main.rs` only calls [`main`]. Data flows one way: [`cli`] parses flags
//! and resolves them into a capability's configuration; the capabilities
//! ([`swap`], [`logs`], [`envs`], [`cleanup`], [`cluster`], [`controller`], [`agent`])
//! use [`k8s`] for everything they share about the API; [`kdev_contract`]
//! holds what separate kdev processes agree on. `scripts/check-imports`
//! keeps the arrows pointing down.

#![forbid(unsafe_code)]

pub mod agent;
pub mod cleanup;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod dashboard;
pub mod envs;
pub mod error;
pub mod faults;
pub mod fswatch;
pub mod host;
pub mod image;
pub mod k8s;
pub mod logs;
pub mod netview;
pub mod progress;
pub mod swap;
pub mod testing;
mod version;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::Failure;

/// Parses arguments, runs the command and turns its outcome into an exit code:
/// 0 for success, 1 for a failure, 2 for a usage error (as clap does for bad
/// flags).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A controller's actions are its log: info by default. The CLI reports
    // failures itself, once.
    let service = matches!(
        cli.command,
        Command::Controller(_) | Command::Agent(_) | Command::Waker(_) | Command::NodeProxy(_)
    );
    init_tracing(cli.global.verbose, service);
    // These change namespaces, which the kernel refuses to a threaded
    // process: they run before the async runtime starts its threads.
    match cli.command {
        Command::ExecChild(args) => {
            return swap::child::exec(args.parent, args.map_user, &args.command)
                .unwrap_or_else(|err| report(&err, cli.global.verbose));
        }
        Command::Netview(args) => return netview::helper::main(args.resolve()),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let verbose = cli.global.verbose;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => report(&err, verbose),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let flags = cli.global.kube();
    if matches!(
        cli.command,
        Command::Swap(_)
            | Command::Run(_)
            | Command::Logs(_)
            | Command::Sessions(_)
            | Command::Version(_)
            | Command::Cluster(_)
    ) {
        // Files of swap sessions whose kdev was killed (kill -9, a crash)
        // go at the next start; `kdev sweep` also reports them.
        for folder in swap::local::sweep_orphans() {
            tracing::info!(folder = %folder.display(), "removed the files of a swap session whose kdev is gone");
        }
    }
    match cli.command {
        Command::Cluster(args) => cluster::run(args.resolve()).await,
        Command::Controller(args) => controller::run(&flags, args.resolve()?).await,
        Command::Test(args) => testing::runner::run(&flags, args.resolve()?).await,
        Command::Image(args) => match args.command {
            cli::ImageCommand::Build(build) => {
                let (spec, output) = build.resolve()?;
                image::build_to(&spec, &output)
            }
            cli::ImageCommand::Load { file, name } => cluster::load_image(&name, &file).await,
            cli::ImageCommand::Push {
                file,
                reference,
                username,
                password_stdin,
                insecure,
            } => {
                let credentials = match (username, password_stdin) {
                    (Some(username), true) => {
                        let mut password = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                            .map_err(|err| {
                                error::usage(format!(
                                    "failed to read the password from stdin: {err}"
                                ))
                            })?;
                        image::Credentials::Basic {
                            username,
                            password: password.trim_end().to_owned(),
                        }
                    }
                    (None, false) => image::Credentials::Anonymous,
                    _ => return Err(error::usage("--username and --password-stdin go together")),
                };
                image::push(&file, &reference, credentials, insecure).await
            }
            cli::ImageCommand::Agent {
                binary,
                reference,
                output,
            } => {
                let reference = reference.unwrap_or_else(swap::proxy::default_agent_image);
                image::validate_reference(&reference)?;
                image::agent_image(&binary, &reference, &output)
            }
        },
        Command::Version(args) => version::run(&flags, args.client).await,
        Command::Agent(args) => agent::run(args.resolve()?).await,
        Command::AgentReady { health } => agent::ready(health).await,
        Command::Waker(args) => {
            let config = args.resolve()?;
            envs::waker::serve(k8s::connect(&flags).await?, config).await
        }
        Command::ExecChild(_) | Command::Netview(_) => unreachable!("started before the runtime"),
        Command::NodeProxy(args) => cluster::netns::run(args.resolve()).await,
        Command::Swap(args) => swap::run(&flags, args.resolve()?).await,
        Command::Run(args) => swap::run(&flags, args.resolve()?).await,
        Command::Logs(args) => logs::run(&flags, args.resolve(&cli.global.namespace)?).await,
        Command::Sweep(args) => cleanup::sweep(&flags, args.resolve()).await,
        Command::Sessions(args) => cleanup::sessions(&flags, args.all_namespaces).await,
        Command::Sleep(args) => {
            envs::run(
                &flags,
                args.resolve(envs::Direction::Sleep, &cli.global.namespace)?,
            )
            .await
        }
        Command::Wake(args) => {
            envs::run(
                &flags,
                args.resolve(envs::Direction::Wake, &cli.global.namespace)?,
            )
            .await
        }
        Command::Envs(args) => match args.dashboard() {
            Some(open) => dashboard::open::run(&flags, open.resolve()?).await,
            None => envs::envs(&flags, args.resolve(&cli.global.namespace)?).await,
        },
        Command::Completion(args) => {
            cli::completion(args.shell);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per failure, causes joined by ": "; the debug form (with the
/// whole chain) only with `-v`.
fn report(err: &anyhow::Error, verbose: u8) -> ExitCode {
    if verbose > 0 {
        eprintln!("error: {err:?}");
    } else {
        eprintln!("error: {err:#}");
    }
    match err.downcast_ref::<Failure>() {
        Some(Failure::Usage(_)) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn init_tracing(verbose: u8, service: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if service => "off,kdev=info",
        // kdev reports failures itself, once; libraries' own error logs would repeat them.
        0 => "off,kdev=warn",
        1 => "info,kdev=debug",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
