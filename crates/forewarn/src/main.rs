//! `forewarn`: train, serve, simulate.

mod bench;
mod classify;
mod config;
mod evaluate;
mod serve;
mod simulate;
mod train;
mod version;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "forewarn",
    version,
    about = "Streaming anomaly detection for industrial sensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a forecaster on normal-operation history and calibrate its threshold.
    Train(train::TrainArgs),
    /// Consume readings from Kafka, detect anomalies, serve alerts over HTTP.
    Serve(serve::ServeArgs),
    /// Stream simulated (or replayed) plant readings to Kafka.
    Simulate(simulate::SimulateArgs),
    /// Print the OpenAPI document of the HTTP API (JSON).
    Openapi,
    /// Train, replay labelled data through the streaming detector, and report accuracy metrics.
    Evaluate(evaluate::EvaluateArgs),
    /// Train a classifier head (fault or not, which fault) on labelled fault data and report per-class accuracy.
    Classify(classify::ClassifyArgs),
    /// Benchmark serve end to end on a local broker, with a Python peer and the GEMM roofline.
    Bench(bench::BenchArgs),
    /// Print the version and the libtorch this binary loaded; --devices: what it sees of CUDA and cuDNN.
    Version(version::VersionArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a config file (with env overrides) and print the effective configuration.
    Check { file: Option<PathBuf> },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => {
            init_cli_logging();
            train::run(args)
        }
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Version(args) => version::run(args),
        Command::Openapi => serde_json::to_string_pretty(&forewarn_api::openapi::document_json())
            .map(|text| println!("{text}"))
            .map_err(Into::into),
        Command::Evaluate(args) => {
            init_cli_logging();
            evaluate::run(args)
        }
        Command::Classify(args) => {
            init_cli_logging();
            classify::run(args)
        }
        Command::Simulate(args) => {
            init_cli_logging();
            runtime().and_then(|rt| {
                rt.block_on(async { simulate::run(args, shutdown_on_signal()).await })
            })
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config::Config::load(file.as_deref())
            .and_then(|c| Ok(toml::to_string_pretty(&c)?))
            .map(|text| print!("{text}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A token cancelled on SIGINT or SIGTERM: the one shutdown signal every
/// task watches. Must be called inside a tokio runtime.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
