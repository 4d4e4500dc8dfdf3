//! Fault diagnosis of open alerts: a fault classifier (trained on labelled
//! fault runs by `forewarn classify --save`) reads a device's window when
//! its alert opens and after each of its batches while it stays open; an
//! alert's [`Diagnosis`] is the mean of those readings, so it firms up as
//! the fault develops instead of resting on the first few faulty rows.
//! The classifier itself (libtorch) lives in `forewarn-model`; this is the
//! contract and the bookkeeping, with no I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::alert::{ClassProbability, Diagnosis};

/// One class a classifier tells apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassName {
    /// The label in the training data (TEP: the fault number, 0 normal).
    pub class: u8,
    pub name: String,
}

/// A fault classifier as the serve pipeline runs it.
pub trait FaultClassifier {
    /// The artifact's name.
    fn name(&self) -> &str;
    /// A hash of its weights.
    fn version(&self) -> &str;
    /// The classes, in the order of [`Self::probabilities`]' output.
    fn classes(&self) -> &[ClassName];
    /// The channels it reads, in order.
    fn channels(&self) -> &[String];
    /// Rows per window.
    fn window(&self) -> usize;
    /// Class probabilities of `count` windows (`windows` row-major, in
    /// the readings' units, `window` rows of `channels` each): `count`
    /// rows of `classes().len()` values.
    fn probabilities(&mut self, windows: &[f32], count: usize) -> Result<Vec<f32>, String>;
}

/// Why a classifier cannot diagnose a model's alerts.
pub fn check_fits(
    classifier: &dyn FaultClassifier,
    model_channels: &[String],
    model_window: usize,
) -> Result<(), String> {
    let theirs = classifier.channels();
    if theirs != model_channels {
        let missing: Vec<&str> = (model_channels.iter())
            .filter(|c| !theirs.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = (theirs.iter())
            .filter(|c| !model_channels.contains(c))
            .map(String::as_str)
            .collect();
        return Err(if missing.is_empty() && extra.is_empty() {
            format!(
                "classifier {:?} reads the model's channels in another order",
                classifier.name()
            )
        } else {
            format!(
                "classifier {:?} does not read the model's channels: it lacks {missing:?} and has {extra:?} the model does not",
                classifier.name()
            )
        });
    }
    if classifier.window() > model_window {
        return Err(format!(
            "classifier {:?} reads windows of {} rows, more than the model keeps per device ({model_window})",
            classifier.name(),
            classifier.window()
        ));
    }
    Ok(())
}

/// The running mean of each open alert's class probabilities.
#[derive(Debug, Clone)]
pub struct DiagnosisTracker {
    classifier: String,
    version: String,
    classes: Vec<ClassName>,
    open: HashMap<String, Running>,
}

#[derive(Debug, Clone)]
struct Running {
    sum: Vec<f64>,
    windows: u32,
    /// The ranking, and the top class's probability, last announced.
    announced: Vec<u8>,
    announced_top: f64,
}

impl DiagnosisTracker {
    /// A diagnosis whose ranking stays is announced again once its top
    /// probability has moved this much: what operators read stays close
    /// to the running mean, and a long alert is re-announced only a few
    /// times, since the mean of n windows moves less and less.
    pub const MIN_CHANGE: f64 = 0.1;

    pub fn new(classifier: &dyn FaultClassifier) -> Self {
        Self {
            classifier: classifier.name().to_owned(),
            version: classifier.version().to_owned(),
            classes: classifier.classes().to_vec(),
            open: HashMap::new(),
        }
    }

    /// Adds one window's probabilities to alert `id`'s mean. Returns its
    /// diagnosis and whether it is worth announcing: its ranking (the top
    /// classes, in order) differs from the one last announced, or its top
    /// probability moved by [`Self::MIN_CHANGE`] since. The first reading
    /// of an alert always is.
    pub fn observe(&mut self, id: &str, probabilities: &[f32]) -> (Diagnosis, bool) {
        let k = self.classes.len();
        let r = self.open.entry(id.to_owned()).or_insert_with(|| Running {
            sum: vec![0.0; k],
            windows: 0,
            announced: Vec::new(),
            announced_top: 0.0,
        });
        for (s, p) in r.sum.iter_mut().zip(probabilities) {
            *s += f64::from(*p);
        }
        r.windows += 1;
        let d = diagnosis(&self.classifier, &self.version, &self.classes, r);
        let ranking = d.ranking();
        let top = d.top.first().map_or(0.0, |c| c.probability);
        let changed = ranking != r.announced || (top - r.announced_top).abs() >= Self::MIN_CHANGE;
        if changed {
            r.announced = ranking;
            r.announced_top = top;
        }
        (d, changed)
    }

    /// The diagnosis of alert `id` so far, and forgets it (the alert is
    /// resolved). `None` if it was never read (a classifier added, or the
    /// process restarted, while the alert was open).
    pub fn finish(&mut self, id: &str) -> Option<Diagnosis> {
        let r = self.open.remove(id)?;
        Some(diagnosis(
            &self.classifier,
            &self.version,
            &self.classes,
            &r,
        ))
    }

    /// Forgets the alerts `keep` refuses (alerts whose devices went to
    /// another instance, or closed by a model swap).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.open.retain(|id, _| keep(id));
    }

    /// Alerts being diagnosed.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

fn diagnosis(classifier: &str, version: &str, classes: &[ClassName], r: &Running) -> Diagnosis {
    let n = f64::from(r.windows.max(1));
    let mut ranked: Vec<(usize, f64)> = r.sum.iter().map(|s| s / n).enumerate().collect();
    // Most probable first; ties in class order, so the ranking is stable.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Diagnosis {
        classifier: classifier.to_owned(),
        classifier_version: version.to_owned(),
        top: ranked
            .into_iter()
            .take(Diagnosis::TOP)
            .map(|(i, p)| ClassProbability {
                class: classes[i].class,
                name: classes[i].name.clone(),
                probability: p,
            })
            .collect(),
        windows: r.windows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table-driven classifier: `probabilities` returns the next row of
    /// `answers` per window.
    struct Table {
        classes: Vec<ClassName>,
        channels: Vec<String>,
        window: usize,
    }

    impl FaultClassifier for Table {
        fn name(&self) -> &str {
            "tep-faults"
        }
        fn version(&self) -> &str {
            "abc"
        }
        fn classes(&self) -> &[ClassName] {
            &self.classes
        }
        fn channels(&self) -> &[String] {
            &self.channels
        }
        fn window(&self) -> usize {
            self.window
        }
        fn probabilities(&mut self, _: &[f32], _: usize) -> Result<Vec<f32>, String> {
            Err("not run in these tests".into())
        }
    }

    fn table() -> Table {
        Table {
            classes: (0..4)
                .map(|c| ClassName {
                    class: c * 2,
                    name: format!("class {}", c * 2),
                })
                .collect(),
            channels: vec!["a".into(), "b".into()],
            window: 20,
        }
    }

    fn top(d: &Diagnosis) -> Vec<(u8, f64)> {
        d.top
            .iter()
            .map(|c| (c.class, (c.probability * 1000.0).round() / 1000.0))
            .collect()
    }

    /// (alert, probabilities of classes 0, 2, 4, 6) -> (top 3, announced).
    type Case<'a> = (&'a str, [f32; 4], &'a [(u8, f64)], bool);

    #[test]
    fn a_diagnosis_is_the_mean_of_the_alerts_windows_and_announced_when_its_ranking_changes() {
        let mut t = DiagnosisTracker::new(&table());
        // (alert, probabilities of classes 0, 2, 4, 6) -> (top 3, changed)
        let cases: &[Case] = &[
            (
                "x",
                [0.1, 0.6, 0.2, 0.1],
                &[(2, 0.6), (4, 0.2), (0, 0.1)],
                true,
            ),
            // Same ranking, top moved by 0.05: nothing to announce.
            (
                "x",
                [0.1, 0.5, 0.3, 0.1],
                &[(2, 0.55), (4, 0.25), (0, 0.1)],
                false,
            ),
            // Another alert has its own mean.
            (
                "y",
                [0.0, 0.0, 0.0, 1.0],
                &[(6, 1.0), (0, 0.0), (2, 0.0)],
                true,
            ),
            // Same ranking, top 0.6 -> 0.667 since announced: not yet.
            (
                "x",
                [0.0, 0.9, 0.1, 0.0],
                &[(2, 0.667), (4, 0.2), (0, 0.067)],
                false,
            ),
            // Same ranking, top down to 0.5 (0.1 from 0.6): announced.
            (
                "x",
                [0.0, 0.0, 1.0, 0.0],
                &[(2, 0.5), (4, 0.4), (0, 0.05)],
                true,
            ),
            // Class 4 overtakes class 2.
            (
                "x",
                [0.0, 0.0, 1.0, 0.0],
                &[(4, 0.52), (2, 0.4), (0, 0.04)],
                true,
            ),
        ];
        for (id, p, want, changed) in cases {
            let (d, c) = t.observe(id, p);
            assert_eq!((top(&d).as_slice(), c), (*want, *changed), "{id} {p:?}");
            assert_eq!(
                (d.classifier.as_str(), d.classifier_version.as_str()),
                ("tep-faults", "abc")
            );
        }
        let x = t.finish("x").unwrap();
        assert_eq!((x.windows, x.top[0].name.as_str()), (5, "class 4"));
        assert_eq!(t.len(), 1);
        assert!(t.finish("x").is_none(), "a finished alert is forgotten");
        t.retain(|id| id != "y");
        assert!(t.is_empty());
    }

    #[test]
    fn a_classifier_must_read_the_models_channels_and_fit_its_window() {
        let c = table();
        let ab = ["a".to_string(), "b".to_string()];
        let cases: &[(&[&str], usize, Option<&str>)] = &[
            (&["a", "b"], 50, None),
            (&["a", "b"], 20, None),
            (
                &["a", "b"],
                10,
                Some("windows of 20 rows, more than the model keeps per device (10)"),
            ),
            (&["b", "a"], 50, Some("in another order")),
            (
                &["a", "c"],
                50,
                Some("it lacks [\"c\"] and has [\"b\"] the model does not"),
            ),
        ];
        for (channels, window, want) in cases {
            let model: Vec<String> = channels.iter().map(|s| s.to_string()).collect();
            let got = check_fits(&c, &model, *window);
            match want {
                None => assert_eq!(got, Ok(()), "{channels:?}"),
                Some(w) => assert!(got.unwrap_err().contains(w), "{channels:?}"),
            }
        }
        assert_eq!(c.channels(), ab);
    }
}
