//! The development scoreboard (`forewarn scoreboard`): one model
//! configuration evaluated ([`crate::evaluate`]) on every set of a suite,
//! each set with its own protocol (what it trains on, its columns, its
//! NAB windows), summarised as one table: point F1, FAR, event F1 and NAB
//! standard per set, each set's headline metric as its score, and the
//! mean of the scores — the number a default is chosen by.
//!
//! The suite is a TOML file (docs/accuracy/suite.toml) of `[[set]]`
//! tables; paths in it are relative to a data root. A set marked
//! `held_out` runs only when asked for: it stays out of the loop in which
//! candidates are compared, so it can check the chosen one afterwards.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use forewarn_data::{CsvOptions, Separator};
use forewarn_eval::{Metrics, WindowPosition};
use forewarn_model::Precision;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Context, OfflineError};
use crate::evaluate::{EvalProgress, Evaluation, TrainOn, TrainRows, evaluate};

/// A suite file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(rename = "set")]
    pub sets: Vec<SetSpec>,
}

/// Which metric is a set's score (the published protocol's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Headline {
    /// Point-wise F1.
    F1,
    /// Event-wise F1 (telemanom's counting).
    EventF1,
    /// NAB standard profile, divided by 100 for the score.
    NabStandard,
}

impl Headline {
    /// The score in [0, 1] (NAB can go below 0) from a set's metrics;
    /// `None` when the metric is undefined there.
    pub fn score(self, m: &Metrics) -> Option<f64> {
        match self {
            Self::F1 => m.f1,
            Self::EventF1 => m.event_f1,
            Self::NabStandard => m.nab_standard.map(|v| v / 100.0),
        }
    }
}

/// One development set and its protocol.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSpec {
    pub name: String,
    /// What it is and whose protocol it follows (for the report).
    #[serde(default)]
    pub about: String,
    /// Labelled test files and folders (under the data root).
    #[serde(default)]
    pub data: Vec<PathBuf>,
    /// One model on these normal files ...
    #[serde(default)]
    pub train: Vec<PathBuf>,
    /// ... or per file its first rows ("400", "15%") ...
    pub train_rows: Option<String>,
    /// ... or per file the same-named file in this folder.
    pub train_dir: Option<PathBuf>,
    /// CSV delimiter (one ASCII character; default ',').
    pub sep: Option<char>,
    pub time_column: Option<String>,
    pub label_column: Option<String>,
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    /// Context channels of this data (globs, as `--context-columns`): a
    /// description of the data, so it replaces the configuration's.
    #[serde(default)]
    pub context_columns: Vec<String>,
    /// NAB window width in report units (0: the labelled segments are
    /// the windows, as NAB's own labels are); unset: NAB's default.
    pub nab_window: Option<f64>,
    pub headline: Headline,
    /// `forewarn simulate` flags that generate this set (the command line
    /// writes it with `--csv-dir` into the work folder and sets `data`).
    pub simulate: Option<String>,
    /// Not run unless asked for (kept out of the tuning loop).
    #[serde(default)]
    pub held_out: bool,
}

impl Suite {
    pub fn load(path: &Path) -> Result<Self, OfflineError> {
        let text = std::fs::read_to_string(path).map_err(|e| OfflineError::io(path, e))?;
        let suite: Self = toml::from_str(&text)
            .map_err(|e| OfflineError::Config(e.to_string()))
            .context(|| format!("parsing {}", path.display()))?;
        suite
            .validate()
            .context(|| format!("in {}", path.display()))?;
        Ok(suite)
    }

    fn validate(&self) -> Result<(), OfflineError> {
        let bad = |m: String| Err(OfflineError::Config(m));
        if self.sets.is_empty() {
            return bad("a suite needs at least one [[set]]".into());
        }
        for (i, s) in self.sets.iter().enumerate() {
            if s.name.trim().is_empty() {
                return bad(format!("set {} has no name", i + 1));
            }
            if self.sets[..i].iter().any(|o| o.name == s.name) {
                return bad(format!("two sets are named {:?}", s.name));
            }
            let modes = usize::from(!s.train.is_empty())
                + usize::from(s.train_rows.is_some())
                + usize::from(s.train_dir.is_some());
            if modes != 1 {
                return bad(format!(
                    "set {:?}: give exactly one of train, train_rows, train_dir",
                    s.name
                ));
            }
            if s.data.is_empty() == s.simulate.is_none() {
                return bad(format!(
                    "set {:?}: give exactly one of data and simulate",
                    s.name
                ));
            }
            if s.sep.is_some_and(|c| !c.is_ascii()) {
                return bad(format!("set {:?}: sep must be one ASCII character", s.name));
            }
            if let Some(rows) = &s.train_rows {
                rows.parse::<TrainRows>().map_err(|e| {
                    OfflineError::Config(format!("set {:?}: train_rows {e}", s.name))
                })?;
            }
        }
        Ok(())
    }

    /// The sets to run: those named in `only` (every name must exist), or
    /// all but the held-out ones (with `held_out`, those too).
    pub fn select(&self, only: &[String], held_out: bool) -> Result<Vec<&SetSpec>, OfflineError> {
        if let Some(missing) = only
            .iter()
            .find(|n| !self.sets.iter().any(|s| &s.name == *n))
        {
            let names: Vec<&str> = self.sets.iter().map(|s| s.name.as_str()).collect();
            return Err(OfflineError::Config(format!(
                "no set named {missing:?} (the suite has {names:?})"
            )));
        }
        Ok((self.sets.iter())
            .filter(|s| {
                if only.is_empty() {
                    held_out || !s.held_out
                } else {
                    only.contains(&s.name)
                }
            })
            .collect())
    }
}

impl SetSpec {
    /// The evaluation this set runs for `config`, paths resolved against
    /// `root`; `data` replaces the spec's (a generated set); `jobs` files
    /// at once where each has its own model.
    pub fn evaluation(
        &self,
        root: &Path,
        config: &ModelConfig,
        data: Option<&Path>,
        jobs: usize,
    ) -> Evaluation {
        let at = |p: &PathBuf| root.join(p);
        let train = match (&self.train_rows, &self.train_dir) {
            (Some(rows), _) => TrainOn::Rows(rows.parse().unwrap_or(TrainRows::Rows(0))),
            (None, Some(dir)) => TrainOn::Paired(at(dir)),
            (None, None) => TrainOn::Files(self.train.iter().map(at).collect()),
        };
        Evaluation {
            data: match data {
                Some(d) => vec![d.to_owned()],
                None => self.data.iter().map(at).collect(),
            },
            csv: CsvOptions {
                separator: Separator::Char(self.sep.unwrap_or(',') as u8),
                time_column: self.time_column.clone(),
                label_column: self.label_column.clone(),
                ignore_columns: self.ignore_columns.clone(),
                ..CsvOptions::default()
            },
            changepoint_column: None,
            fault_cell_columns: None,
            train,
            config: {
                let mut config = config.clone();
                if !self.context_columns.is_empty() {
                    config.model.context = self.context_columns.clone();
                }
                config
            },
            nab_window: self.nab_window,
            nab_position: WindowPosition::Centered,
            plot: None,
            decisions: None,
            precision: Precision::F32,
            score_device: None,
            jobs,
        }
    }
}

/// One set's row of the scoreboard.
#[derive(Debug, Clone, Serialize)]
pub struct SetResult {
    pub name: String,
    pub about: String,
    pub headline: Headline,
    /// The headline metric in [0, 1] (NAB / 100).
    pub score: Option<f64>,
    pub held_out: bool,
    pub seconds: f64,
    /// Why the configuration could not score this set (its score then
    /// counts as 0 in the mean; the other sets still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The scoreboard of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Scoreboard {
    pub forewarn_version: String,
    pub config: ModelConfig,
    pub sets: Vec<SetResult>,
    /// Mean of the scores of the sets that are not held out (undefined
    /// scores count as 0: a set the configuration cannot score is lost).
    pub mean_score: f64,
    pub seconds: f64,
}

/// What a scoreboard run reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum BoardProgress<'a> {
    Set(&'a SetSpec),
    Eval(EvalProgress<'a>),
    Done(&'a SetResult),
}

/// Runs `config` over `sets`; `data_for` gives a set's generated data
/// folder (the simulated sets), `None` for the others; `jobs` as in
/// [`Evaluation::jobs`].
pub fn run(
    sets: &[&SetSpec],
    root: &Path,
    config: &ModelConfig,
    jobs: usize,
    data_for: &mut dyn FnMut(&SetSpec) -> Result<Option<PathBuf>, OfflineError>,
    progress: &mut (dyn FnMut(BoardProgress<'_>) + Send),
) -> Result<Scoreboard, OfflineError> {
    let started = Instant::now();
    let mut results = Vec::new();
    for spec in sets {
        progress(BoardProgress::Set(spec));
        let t = Instant::now();
        let data = data_for(spec)?;
        let e = spec.evaluation(root, config, data.as_deref(), jobs);
        // A set the configuration cannot score (too few rows for its
        // window, say) is a lost set, not a lost scoreboard.
        let (metrics, error) = match evaluate(&e, &mut |p| progress(BoardProgress::Eval(p))) {
            Ok(report) => (report.metrics, None),
            Err(why) => (Metrics::default(), Some(why.to_string())),
        };
        let result = SetResult {
            name: spec.name.clone(),
            about: spec.about.clone(),
            headline: spec.headline,
            score: error
                .is_none()
                .then(|| spec.headline.score(&metrics))
                .flatten(),
            held_out: spec.held_out,
            seconds: t.elapsed().as_secs_f64(),
            error,
            metrics,
        };
        progress(BoardProgress::Done(&result));
        results.push(result);
    }
    let scored: Vec<f64> = (results.iter())
        .filter(|r| !r.held_out)
        .map(|r| r.score.unwrap_or(0.0))
        .collect();
    Ok(Scoreboard {
        forewarn_version: env!("CARGO_PKG_VERSION").into(),
        config: config.clone(),
        mean_score: mean(&scored),
        sets: results,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Scoreboard {
    /// The table as Markdown: a row per set, then the mean score.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
        let mut out = String::from(
            "| set | score | point F1 | FAR % | event F1 | NAB standard | P / R (points) | s |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.sets {
            let m = &r.metrics;
            let name = if r.held_out {
                format!("{} (held out)", r.name)
            } else {
                r.name.clone()
            };
            let _ = writeln!(
                out,
                "| {name} | {} ({}) | {} | {} | {} | {} | {} / {} | {:.0} |",
                f(r.score, 3),
                match r.headline {
                    Headline::F1 => "point F1",
                    Headline::EventF1 => "event F1",
                    Headline::NabStandard => "NAB / 100",
                },
                f(m.f1, 3),
                f(m.far, 1),
                f(m.event_f1, 3),
                f(m.nab_standard, 1),
                f(m.precision, 3),
                f(m.recall, 3),
                r.seconds
            );
        }
        // Only held-out sets run: there is no mean to choose by.
        let mean = if self.sets.iter().any(|r| !r.held_out) {
            format!("{:.3}", self.mean_score)
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| **mean score** | **{mean}** | | | | | | {:.0} |",
            self.seconds
        );
        out.push_str(
            "\n| set | labelled segments still flagged at their end | rows flagged after one (median / mean) | FAR % after an anomaly / elsewhere | alerts (per segment caught) |\n\
             | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.sets {
            let m = &r.metrics;
            let _ = writeln!(
                out,
                "| {} | {} of {} | {} / {} | {} / {} | {} ({}) |",
                r.name,
                m.segments_still_flagged,
                m.labelled_segments,
                f(m.rows_after_anomaly_median, 1),
                f(m.rows_after_anomaly_mean, 1),
                f(m.far_after_anomaly, 1),
                f(m.far_elsewhere, 1),
                m.alerts,
                f(m.alerts_per_caught_segment, 2),
            );
        }
        for r in self.sets.iter().filter(|r| r.error.is_some()) {
            let _ = writeln!(
                out,
                "\n{}: not scored: {}",
                r.name,
                r.error.as_deref().unwrap_or("")
            );
        }
        out
    }
}

/// One configuration scored under several training seeds (`forewarn
/// scoreboard --seeds`): each set's score per seed, its mean and range.
/// On SMAP one seed's event F1 can differ from another's by 0.09, more
/// than most changes between candidates, so a candidate is compared by
/// its mean over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSpread {
    pub seeds: Vec<u64>,
    /// Per set, in the suite's order.
    pub sets: Vec<SetSpread>,
    /// The mean over seeds of each seed's scoreboard mean.
    pub mean_score: f64,
    /// The lowest and highest scoreboard mean of one seed.
    pub mean_range: (f64, f64),
    pub seconds: f64,
    /// Each seed's whole scoreboard.
    pub boards: Vec<Scoreboard>,
}

/// One set's scores over the seeds of a [`SeedSpread`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetSpread {
    pub name: String,
    pub held_out: bool,
    /// Its score under each seed (undefined: not scored under that seed).
    pub scores: Vec<Option<f64>>,
    /// Mean and range of the scores, undefined ones counted as 0 (as in a
    /// scoreboard's mean).
    pub mean: f64,
    pub range: (f64, f64),
    /// Mean point FAR (%) over the seeds that define it ...
    pub far: Option<f64>,
    /// ... and the mean of its part after an anomaly (an alert carried
    /// over from a labelled segment; [`forewarn_eval::Recovery`]).
    pub far_after_anomaly: Option<f64>,
    /// Mean alerts per labelled segment caught (above 1: alerts that
    /// resolve and open again inside an anomaly).
    pub alerts_per_caught_segment: Option<f64>,
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

impl SeedSpread {
    /// Summarises one scoreboard per seed (same sets, in the same order).
    pub fn of(seeds: Vec<u64>, boards: Vec<Scoreboard>) -> Result<Self, OfflineError> {
        let first = match (&boards[..], seeds.len() == boards.len()) {
            ([first, ..], true) => first,
            _ => {
                return Err(OfflineError::Config(format!(
                    "{} seeds but {} scoreboards",
                    seeds.len(),
                    boards.len()
                )));
            }
        };
        let names: Vec<&str> = first.sets.iter().map(|r| r.name.as_str()).collect();
        if let Some(b) = boards.iter().find(|b| {
            !b.sets
                .iter()
                .map(|r| r.name.as_str())
                .eq(names.iter().copied())
        }) {
            return Err(OfflineError::Config(format!(
                "scoreboards over different sets: {names:?} and {:?}",
                b.sets.iter().map(|r| &r.name).collect::<Vec<_>>()
            )));
        }
        let sets = (first.sets.iter().enumerate())
            .map(|(i, r)| {
                let scores: Vec<Option<f64>> = boards.iter().map(|b| b.sets[i].score).collect();
                let counted: Vec<f64> = scores.iter().map(|s| s.unwrap_or(0.0)).collect();
                let mean_of = |m: fn(&Metrics) -> Option<f64>| {
                    let v: Vec<f64> = boards
                        .iter()
                        .filter_map(|b| m(&b.sets[i].metrics))
                        .collect();
                    (!v.is_empty()).then(|| mean(&v))
                };
                SetSpread {
                    name: r.name.clone(),
                    held_out: r.held_out,
                    mean: mean(&counted),
                    range: range(&counted),
                    far: mean_of(|m| m.far),
                    far_after_anomaly: mean_of(|m| m.far_after_anomaly),
                    alerts_per_caught_segment: mean_of(|m| m.alerts_per_caught_segment),
                    scores,
                }
            })
            .collect();
        let means: Vec<f64> = boards.iter().map(|b| b.mean_score).collect();
        Ok(Self {
            seeds,
            sets,
            mean_score: mean(&means),
            mean_range: range(&means),
            seconds: boards.iter().map(|b| b.seconds).sum(),
            boards,
        })
    }

    /// The table as Markdown: a row per set with its mean, range and each
    /// seed's score, then the scoreboard mean.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        let seeds: String = self.seeds.iter().map(|s| format!(" seed {s} |")).collect();
        let rule: String = self.seeds.iter().map(|_| " --- |").collect();
        let mut out = format!(
            "| set | mean score | min – max | FAR % (mean; after an anomaly) | alerts per segment caught (mean) |{seeds}\n| --- | --- | --- | --- | --- |{rule}\n"
        );
        for r in &self.sets {
            let name = if r.held_out {
                format!("{} (held out)", r.name)
            } else {
                r.name.clone()
            };
            let per: String = r.scores.iter().map(|s| format!(" {} |", f(*s))).collect();
            let _ = writeln!(
                out,
                "| {name} | {:.3} | {:.3} – {:.3} | {} | {} |{per}",
                r.mean,
                r.range.0,
                r.range.1,
                match (r.far, r.far_after_anomaly) {
                    (Some(far), Some(after)) => format!("{far:.1}; {after:.1}"),
                    (Some(far), None) => format!("{far:.1}"),
                    _ => "–".into(),
                },
                r.alerts_per_caught_segment
                    .map_or("–".into(), |v| format!("{v:.2}")),
            );
        }
        if self.sets.iter().all(|r| r.held_out) {
            return out;
        }
        let per: String = (self.boards.iter())
            .map(|b| format!(" {:.3} |", b.mean_score))
            .collect();
        let _ = writeln!(
            out,
            "| **mean score** | **{:.3}** | {:.3} – {:.3} | | |{per}",
            self.mean_score, self.mean_range.0, self.mean_range.1
        );
        out
    }
}

/// Runs `config` over `sets` once per seed (`[model] seed` replaced), as
/// [`run`] does.
pub fn run_seeds(
    sets: &[&SetSpec],
    root: &Path,
    config: &ModelConfig,
    seeds: &[u64],
    jobs: usize,
    data_for: &mut dyn FnMut(&SetSpec) -> Result<Option<PathBuf>, OfflineError>,
    progress: &mut (dyn FnMut(u64, BoardProgress<'_>) + Send),
) -> Result<SeedSpread, OfflineError> {
    if seeds.is_empty() {
        return Err(OfflineError::Config("no seeds given".into()));
    }
    let mut boards = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let mut c = config.clone();
        c.model.seed = seed;
        boards.push(run(sets, root, &c, jobs, data_for, &mut |p| {
            progress(seed, p)
        })?);
    }
    SeedSpread::of(seeds.to_vec(), boards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(text: &str) -> Result<Suite, OfflineError> {
        let s: Suite = toml::from_str(text).map_err(|e| OfflineError::Config(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn a_suite_names_each_set_once_with_one_training_mode() {
        let ok = suite(
            "[[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"15%\"\nheadline = \"nab_standard\"\n\
             [[set]]\nname = \"b\"\ndata = [\"y\"]\ntrain_dir = \"t\"\nheadline = \"event_f1\"\nheld_out = true\n",
        )
        .unwrap();
        let names = |v: Vec<&SetSpec>| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(ok.select(&[], false).unwrap()), ["a"]);
        assert_eq!(names(ok.select(&[], true).unwrap()), ["a", "b"]);
        assert_eq!(names(ok.select(&["b".into()], false).unwrap()), ["b"]);
        let e = ok.select(&["c".into()], false).unwrap_err().to_string();
        assert!(e.contains("no set named \"c\""), "{e}");
        let root = Path::new("/data");
        let e = ok.sets[1].evaluation(root, &ModelConfig::default(), None, 1);
        assert_eq!(e.train, TrainOn::Paired(root.join("t")));
        assert_eq!(e.data, vec![root.join("y")]);
        for (text, want) in [
            (
                "[[set]]\nname = \"a\"\ndata = [\"x\"]\nheadline = \"f1\"\n",
                "exactly one of train",
            ),
            (
                "[[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"1\"\ntrain_dir = \"t\"\nheadline = \"f1\"\n",
                "exactly one of train",
            ),
            (
                "[[set]]\nname = \"a\"\ntrain_rows = \"1\"\nheadline = \"f1\"\n",
                "data and simulate",
            ),
            (
                "[[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"0%\"\nheadline = \"f1\"\n",
                "train_rows",
            ),
            (
                "[[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"5\"\nheadline = \"f1\"\n\
                 [[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"5\"\nheadline = \"f1\"\n",
                "two sets are named",
            ),
            (
                "[[set]]\nname = \"a\"\ndata = [\"x\"]\ntrain_rows = \"5\"\nheadline = \"auc\"\n",
                "auc",
            ),
        ] {
            let e = suite(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_headline_metric_is_the_score() {
        let m = Metrics {
            f1: Some(0.5),
            event_f1: Some(0.25),
            nab_standard: Some(-20.0),
            ..Metrics::default()
        };
        assert_eq!(Headline::F1.score(&m), Some(0.5));
        assert_eq!(Headline::EventF1.score(&m), Some(0.25));
        assert_eq!(Headline::NabStandard.score(&m), Some(-0.2));
        assert_eq!(Headline::F1.score(&Metrics::default()), None);
    }

    fn board(seed: u64, scores: &[(&str, Option<f64>, bool)]) -> Scoreboard {
        let sets: Vec<SetResult> = (scores.iter())
            .map(|(name, score, held_out)| SetResult {
                name: (*name).into(),
                about: String::new(),
                headline: Headline::F1,
                score: *score,
                held_out: *held_out,
                seconds: 1.0,
                error: None,
                metrics: Metrics {
                    far: score.map(|s| s * 10.0),
                    far_after_anomaly: score.map(|s| s * 5.0),
                    alerts_per_caught_segment: score.map(|s| 1.0 + s),
                    ..Metrics::default()
                },
            })
            .collect();
        let counted: Vec<f64> = (sets.iter())
            .filter(|r| !r.held_out)
            .map(|r| r.score.unwrap_or(0.0))
            .collect();
        let mut config = ModelConfig::default();
        config.model.seed = seed;
        Scoreboard {
            forewarn_version: "test".into(),
            config,
            mean_score: mean(&counted),
            sets,
            seconds: 2.0,
        }
    }

    #[test]
    fn a_seed_spread_averages_each_set_over_the_seeds() {
        let spread = SeedSpread::of(
            vec![1, 2],
            vec![
                board(
                    1,
                    &[
                        ("a", Some(0.5), false),
                        ("b", Some(0.7), false),
                        ("h", Some(0.2), true),
                    ],
                ),
                board(
                    2,
                    &[
                        ("a", Some(0.3), false),
                        ("b", None, false),
                        ("h", Some(0.4), true),
                    ],
                ),
            ],
        )
        .unwrap();
        let [a, b, h] = &spread.sets[..] else {
            panic!("{:?}", spread.sets)
        };
        assert_eq!(a.scores, [Some(0.5), Some(0.3)]);
        assert!(
            (a.mean - 0.4).abs() < 1e-12 && a.range == (0.3, 0.5),
            "{a:?}"
        );
        assert!((a.far.unwrap() - 4.0).abs() < 1e-12, "{a:?}");
        assert!((a.far_after_anomaly.unwrap() - 2.0).abs() < 1e-12, "{a:?}");
        // 1.5 and 1.3: the mean.
        assert!(
            (a.alerts_per_caught_segment.unwrap() - 1.4).abs() < 1e-12,
            "{a:?}"
        );
        // Unscored under one seed: 0 there, as in the scoreboard mean.
        assert!(
            (b.mean - 0.35).abs() < 1e-12 && b.range == (0.0, 0.7),
            "{b:?}"
        );
        assert!((b.far.unwrap() - 7.0).abs() < 1e-12, "{b:?}");
        assert!(h.held_out && (h.mean - 0.3).abs() < 1e-12);
        // Seed means 0.6 and 0.15 (held-out sets out).
        assert!((spread.mean_score - 0.375).abs() < 1e-12, "{spread:?}");
        assert!(
            (spread.mean_range.0 - 0.15).abs() < 1e-12 && (spread.mean_range.1 - 0.6).abs() < 1e-12
        );
        assert_eq!(spread.seconds, 4.0);
        let table = spread.markdown();
        assert_eq!(table.lines().count(), 2 + 3 + 1, "{table}");
        assert!(
            table.starts_with(
                "| set | mean score | min – max | FAR % (mean; after an anomaly) | alerts per segment caught (mean) | seed 1 | seed 2 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| b | 0.350 | 0.000 – 0.700 | 7.0; 3.5 | 1.70 | 0.700 | – |"),
            "{table}"
        );
        assert!(table.contains("| h (held out) | 0.300 |"), "{table}");
        assert!(
            table.contains("| **mean score** | **0.375** | 0.150 – 0.600 | | | 0.600 | 0.150 |"),
            "{table}"
        );

        let e = SeedSpread::of(vec![1], vec![]).unwrap_err().to_string();
        assert!(e.contains("1 seeds but 0 scoreboards"), "{e}");
        let e = SeedSpread::of(
            vec![1, 2],
            vec![
                board(1, &[("a", Some(0.5), false)]),
                board(2, &[("b", Some(0.5), false)]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("different sets"), "{e}");

        // Held-out sets alone: no mean row to choose by.
        let held = SeedSpread::of(vec![1], vec![board(1, &[("h", Some(0.2), true)])]).unwrap();
        assert!(
            !held.markdown().contains("mean score**"),
            "{}",
            held.markdown()
        );
        assert!(
            held.boards[0]
                .markdown()
                .contains("| **mean score** | **–** |")
        );
    }

    /// 300 rows of two smooth channels; with `fault`, `a` jumps by 40 from
    /// row 200 on (labelled 1 there).
    fn write(path: &Path, fault: bool) {
        let mut s = String::from("a;b;label\n");
        for i in 0..300 {
            let noise = ((i * 7919) % 13) as f64 / 130.0;
            let anomalous = fault && i >= 200;
            let a = (i as f64 * 0.2).sin() + noise + if anomalous { 40.0 } else { 0.0 };
            let b = (i as f64 * 0.2).cos() * 2.0 - noise;
            s.push_str(&format!("{a:.4};{b:.4};{}\n", u8::from(anomalous)));
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s).unwrap();
    }

    /// Two sets with their own protocols (paired train/test folders, and
    /// per-file training rows) and a held-out one, run for real: each set
    /// finds its fault, the held-out set stays out of the mean, and the
    /// table has a row per set.
    #[test]
    fn a_suite_runs_each_set_with_its_protocol_and_averages_the_scores() {
        crate::test_init();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("paired/train/x.csv"), false);
        write(&root.join("paired/test/x.csv"), true);
        write(&root.join("rows/x.csv"), true);
        let suite = suite(
            "[[set]]\nname = \"paired\"\ntrain_dir = \"paired/train\"\ndata = [\"paired/test\"]\n\
             sep = \";\"\nlabel_column = \"label\"\nheadline = \"event_f1\"\n\
             [[set]]\nname = \"rows\"\ntrain_rows = \"150\"\ndata = [\"rows\"]\n\
             sep = \";\"\nlabel_column = \"label\"\nheadline = \"f1\"\n\
             [[set]]\nname = \"late\"\ntrain_rows = \"150\"\ndata = [\"rows\"]\n\
             sep = \";\"\nlabel_column = \"label\"\nheadline = \"nab_standard\"\nheld_out = true\n",
        )
        .unwrap();
        let config: ModelConfig = toml::from_str(
            "[model]\nhidden = 8\nlayers = 1\nwindow = 20\nepochs = 3\n\
             [threshold]\nkind = \"dynamic\"\n[threshold.dynamic]\nscore = \"gaussian\"\n\
             prune = 0.5\nexclude_flagged = true\n",
        )
        .unwrap();
        let config = config.resolved().unwrap();
        let sets = suite.select(&[], true).unwrap();
        let mut seen = Vec::new();
        let board = run(&sets, root, &config, 2, &mut |_| Ok(None), &mut |p| {
            if let BoardProgress::Done(r) = p {
                seen.push(r.name.clone());
            }
        })
        .unwrap();
        assert_eq!(seen, ["paired", "rows", "late"]);
        let [paired, rows, late] = &board.sets[..] else {
            panic!("{:?}", board.sets)
        };
        assert_eq!(paired.metrics.event_f1, Some(1.0), "{paired:?}");
        assert!(rows.score.unwrap() > 0.8, "{rows:?}");
        assert!(late.held_out && late.score.is_some());
        let mean = (paired.score.unwrap() + rows.score.unwrap()) / 2.0;
        assert!((board.mean_score - mean).abs() < 1e-12);
        let table = board.markdown();
        // The scores, then recovery: each fault runs to the end of its
        // file, so no alert outlives one.
        assert_eq!(table.lines().count(), 2 + 3 + 1 + 1 + 2 + 3, "{table}");
        assert!(table.contains("| late (held out) |"), "{table}");
        assert!(
            table.contains("| paired | 0 of 1 | 0.0 / 0.0 | "),
            "{table}"
        );
        // Its one anomaly raised one alert.
        assert_eq!(paired.metrics.alerts_per_caught_segment, Some(1.0));
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("| paired | 0 of 1 |") && l.ends_with(" (1.00) |")),
            "{table}"
        );

        // A test file without its training pair: that set is not scored
        // (0 in the mean, the error naming the file), the others run.
        std::fs::remove_file(root.join("paired/train/x.csv")).unwrap();
        let board = run(&sets[..2], root, &config, 1, &mut |_| Ok(None), &mut |_| {}).unwrap();
        let e = board.sets[0].error.as_deref().unwrap();
        assert!(e.contains("paired with") && e.contains("x.csv"), "{e}");
        assert_eq!(board.sets[0].score, None);
        assert_eq!(board.sets[1].score, rows.score);
        assert!((board.mean_score - rows.score.unwrap() / 2.0).abs() < 1e-12);
        assert!(
            board.markdown().contains("paired: not scored: "),
            "{}",
            board.markdown()
        );
    }
}
