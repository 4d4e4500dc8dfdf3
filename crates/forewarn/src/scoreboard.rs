//! `forewarn scoreboard`: one configuration over every development set of
//! a suite ([`forewarn_offline::scoreboard`]), the simulated sets generated
//! here first (`simulate --csv-dir`), one table on stdout and the JSON
//! report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use forewarn_offline::files::write_json;
use forewarn_offline::scoreboard::{BoardProgress, SetSpec, Suite, run, run_seeds};
use forewarn_offline::{ModelConfig, OfflineError};

use crate::simulate::{SimulateArgs, export_csv};

#[derive(clap::Args, Debug)]
pub struct ScoreboardArgs {
    /// The suite: the development sets and their protocols.
    #[arg(long, default_value = "docs/accuracy/suite.toml")]
    suite: PathBuf,
    /// model.toml of the configuration to score (none: the default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder the suite's paths are relative to.
    #[arg(long, default_value = "../shared/data")]
    data_root: PathBuf,
    /// Where simulated sets are generated (kept, and reused while their
    /// `simulate` flags are unchanged).
    #[arg(long, default_value = ".run/scoreboard")]
    work_dir: PathBuf,
    /// Run only these sets (repeatable; held-out ones included when named).
    #[arg(long = "set", value_name = "NAME")]
    sets: Vec<String>,
    /// Also run the held-out sets.
    #[arg(long)]
    held_out: bool,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Files fitted and scored at once in sets with a model per file, each
    /// on one libtorch thread; 0: one per core. Scores do not depend on it.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Score under each of these training seeds (`[model] seed` replaced)
    /// and report each set's mean and range over them, e.g.
    /// `--seeds 42,7,123,2026`. Without it: once, with the configuration's
    /// seed.
    #[arg(long, value_delimiter = ',', value_name = "SEED,...")]
    seeds: Vec<u64>,
}

fn report_progress(p: BoardProgress<'_>, prefix: &str) {
    match p {
        BoardProgress::Set(s) => eprintln!("scoreboard{prefix}: {} ...", s.name),
        BoardProgress::Eval(_) => {}
        BoardProgress::Done(r) => eprintln!(
            "scoreboard{prefix}: {} score {} in {:.0} s",
            r.name,
            r.score.map_or("-".into(), |v| format!("{v:.3}")),
            r.seconds
        ),
    }
}

pub fn run_args(a: ScoreboardArgs) -> anyhow::Result<()> {
    let config = ModelConfig::load(a.config.as_deref())?;
    if config.model.threads > 0 {
        forewarn_model::set_threads(config.model.threads);
    }
    let suite = Suite::load(&a.suite)?;
    let sets = suite.select(&a.sets, a.held_out)?;
    let work = a.work_dir.clone();
    let table = if a.seeds.is_empty() {
        let board = run(
            &sets,
            &a.data_root,
            &config,
            a.jobs,
            &mut |spec| generated(spec, &work),
            &mut |p| report_progress(p, ""),
        )?;
        if let Some(path) = &a.report {
            write_json(path, &board)?;
        }
        board.markdown()
    } else {
        let spread = run_seeds(
            &sets,
            &a.data_root,
            &config,
            &a.seeds,
            a.jobs,
            &mut |spec| generated(spec, &work),
            &mut |seed, p| report_progress(p, &format!(" (seed {seed})")),
        )?;
        if let Some(path) = &a.report {
            write_json(path, &spread)?;
        }
        spread.markdown()
    };
    print!("{table}");
    if let Some(path) = &a.report {
        println!("report -> {}", path.display());
    }
    Ok(())
}

/// A simulated set's folder, generated from its `simulate` flags unless
/// the folder already holds that generation; `None` for a set on files.
fn generated(spec: &SetSpec, work: &Path) -> Result<Option<PathBuf>, OfflineError> {
    let Some(flags) = &spec.simulate else {
        return Ok(None);
    };
    let dir = work.join(&spec.name);
    let stamp = dir.join(".simulate");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == *flags) {
        return Ok(Some(dir));
    }
    let fail = |e: anyhow::Error| {
        OfflineError::Config(format!("set {:?}: simulate {flags:?}: {e:#}", spec.name))
    };
    #[derive(Parser)]
    struct Sim {
        #[command(flatten)]
        args: SimulateArgs,
    }
    let args = Sim::try_parse_from(std::iter::once("simulate").chain(flags.split_whitespace()))
        .map_err(|e| fail(e.into()))?
        .args;
    let _ = std::fs::remove_dir_all(&dir);
    export_csv(&args, &dir).map_err(fail)?;
    std::fs::write(&stamp, flags)
        .with_context(|| format!("writing {}", stamp.display()))
        .map_err(fail)?;
    Ok(Some(dir))
}
