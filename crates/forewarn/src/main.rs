//! `forewarn`: serve (detect anomalies in a Kafka stream), train and
//! evaluate models, score them on the development sets, classify faults, simulate a plant, benchmark, print the
//! OpenAPI document and check a configuration. This crate parses the
//! arguments, wires the libraries together and prints; the logic is in the
//! libraries (`forewarn-offline` for train, evaluate and classify,
//! `forewarn-ingest` for serve's pipeline, `forewarn-simulator`,
//! `forewarn-bench`).

mod classify;
mod cli;
mod config;
mod evaluate;
mod progress;
mod scoreboard;
mod serve;
mod simulate;
mod train;
mod version;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Score a configuration on every development set (docs/accuracy/suite.toml): one table, one mean.
    Scoreboard(scoreboard::ScoreboardArgs),
    /// Train a classifier head (fault or not, which fault) on labelled fault data and report per-class accuracy.
    Classify(classify::ClassifyArgs),
    /// Benchmark serve end to end on a local broker, with a Python peer and the GEMM roofline.
    #[cfg(feature = "bench")]
    Bench(forewarn_bench::BenchArgs),
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
            cli::init_logging();
            train::run(args)
        }
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => config::env_kafka_client()
            .and_then(|env| forewarn_bench::run(args.with_client_defaults(env))),
        Command::Version(args) => version::run(args),
        Command::Openapi => serde_json::to_string_pretty(&forewarn_api::openapi::document_json())
            .map(|text| println!("{text}"))
            .map_err(Into::into),
        Command::Evaluate(args) => {
            cli::init_logging();
            evaluate::run(args)
        }
        Command::Scoreboard(args) => {
            cli::init_logging();
            scoreboard::run_args(args)
        }
        Command::Classify(args) => {
            cli::init_logging();
            classify::run(args)
        }
        Command::Simulate(mut args) => {
            cli::init_logging();
            // FOREWARN_KAFKA__CLIENT__* first, so a --client flag wins.
            let flags = std::mem::take(&mut args.client);
            config::env_kafka_client()
                .and_then(|env| {
                    args.client = env.into_iter().chain(flags).collect();
                    cli::runtime()
                })
                .and_then(|rt| {
                    rt.block_on(async { simulate::run(args, cli::shutdown_on_signal()).await })
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
