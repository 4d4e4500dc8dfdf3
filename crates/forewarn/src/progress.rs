//! How `train` and `evaluate` print what fitting reports (to stderr; the
//! results go to stdout and the report).

use forewarn_offline::Progress;
use forewarn_offline::calibrate::GaussianFit;

/// Prints `p`, fitting's lines indented by `indent`.
pub fn print(indent: &str, p: Progress<'_>) {
    match p {
        Progress::Epoch(r) => eprintln!(
            "{indent}epoch {:>3}/{}  train loss {:.5}  val loss {:.5}  ({:.1}s)",
            r.epoch, r.epochs, r.train_loss, r.val_loss, r.seconds
        ),
        Progress::ConstantChannels(names) => eprintln!(
            "{indent}context, constant in training, read as that constant: {}",
            names.join(", ")
        ),
        Progress::MonitoredConstant(names) => eprintln!(
            "{indent}monitored, constant in training (scaled by 1 % of their level: any change \
             alarms): {}",
            names.join(", ")
        ),
        Progress::Gaussian(GaussianFit::Injected {
            normal,
            injected,
            beta,
            fbeta,
            tau,
            raised,
        }) => eprintln!(
            "  gaussian: {normal} normal / {injected} injected validation batches, F{beta} = \
             {fbeta:.3} at {tau:.4}{}",
            raised.map_or(String::new(), |(q, floor)| format!(
                ", raised to q{q} of the normal scores, {floor:.4}"
            ))
        ),
        Progress::Gaussian(GaussianFit::NoRoom) => {
            eprintln!("  gaussian: no room to inject faults; quantile x margin of normal scores")
        }
    }
}
