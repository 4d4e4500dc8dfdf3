//! The schema types of the OpenAPI document: they mirror the JSON the
//! handlers produce (the domain types live in crates that do not depend on
//! utoipa); a test checks that every field of a real alert, device, score
//! point and model appears in its schema and vice versa. The handlers name
//! them in their annotations; [`crate::openapi`] lists them.

#![allow(dead_code)] // schema-only types are never constructed

use utoipa::ToSchema;

/// A channel's share of a batch's forecast error.
#[derive(ToSchema)]
#[schema(as = ChannelShare)]
pub struct ChannelShareDoc {
    channel: String,
    /// 0..=1; the shares of a batch sum to 1.
    share: f64,
}

/// One fault class a classifier names, with its probability.
#[derive(ToSchema)]
#[schema(as = ClassProbability)]
pub struct ClassProbabilityDoc {
    /// The label the classifier was trained on (TEP: the fault number, 0
    /// normal operation).
    class: u8,
    /// The class's name (TEP: the fault's description).
    name: String,
    /// 0..=1.
    probability: f64,
}

/// Which fault an open alert most likely is: a fault classifier's reading
/// of the device's window, averaged over the alert's batches so far.
#[derive(ToSchema)]
#[schema(as = Diagnosis)]
pub struct DiagnosisDoc {
    /// The classifier's name.
    classifier: String,
    /// A hash of the classifier's weights.
    classifier_version: String,
    /// The most probable classes, most probable first (at most 3).
    top: Vec<ClassProbabilityDoc>,
    /// Windows the probabilities are the mean of.
    windows: u32,
}

/// A grid cell's share of a batch's forecast error (models whose sensors
/// are laid out on a grid).
#[derive(ToSchema)]
#[schema(as = GridCell)]
pub struct GridCellDoc {
    /// From the top, 0-based.
    row: usize,
    /// From the left, 0-based.
    col: usize,
    /// The channel on the cell.
    channel: String,
    /// 0..=1.
    share: f64,
}

/// The plate a model's monitored channels are laid out on.
#[derive(ToSchema)]
#[schema(as = ModelGrid)]
pub struct ModelGridDoc {
    rows: usize,
    cols: usize,
    /// Row by row (`rows` lists of `cols`), the channel on each cell;
    /// null a cell without one.
    layout: Vec<Vec<Option<String>>>,
}

#[derive(ToSchema)]
#[schema(as = AlertState)]
#[allow(non_camel_case_types)]
pub enum AlertStateDoc {
    open,
    resolved,
}

#[derive(ToSchema)]
#[schema(as = Severity)]
#[allow(non_camel_case_types)]
pub enum SeverityDoc {
    warning,
    critical,
}

/// An alert, as stored: the detector's fields and the operator's
/// acknowledgement. Times are epoch milliseconds.
#[derive(ToSchema)]
#[schema(as = Alert)]
pub struct AlertDoc {
    /// Deterministic: a hash of device, model version and the start of the
    /// first anomalous batch.
    id: String,
    device: String,
    model: String,
    /// The version of the model that raised the alert.
    model_version: String,
    state: AlertStateDoc,
    severity: SeverityDoc,
    opened_at: i64,
    resolved_at: Option<i64>,
    /// Score (batch MSE) of the batch that opened the alert.
    score: f64,
    /// Highest score while open.
    peak_score: f64,
    threshold: f64,
    /// Channels by share of the error, largest first.
    contributors: Vec<ChannelShareDoc>,
    window_start: i64,
    window_end: i64,
    /// The likely fault. Present only when serve runs a fault classifier
    /// and it has read the alert; updated while the alert is open (the
    /// live stream's `diagnosed` event).
    #[schema(required = false)]
    diagnosis: DiagnosisDoc,
    /// The grid cells of `contributors`, in their order. Present only for
    /// a model whose sensors are laid out on a grid (kind `convlstm`).
    #[schema(required = false)]
    cells: Vec<GridCellDoc>,
    acknowledged: bool,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
    ack_note: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = AlertPage)]
pub struct AlertPageDoc {
    alerts: Vec<AlertDoc>,
    /// Pass as `cursor` (with the same filters and sort) for the next page;
    /// null on the last page.
    next_cursor: Option<String>,
}

/// Body of an acknowledgement.
#[derive(ToSchema)]
#[schema(as = AckRequest)]
pub struct AckRequestDoc {
    /// Who acknowledges (1..=128 characters).
    user: String,
    /// Why, or what was done (at most 4000 characters).
    note: Option<String>,
}

/// One device as this instance tracks it.
#[derive(ToSchema)]
#[schema(as = Device)]
pub struct DeviceDoc {
    device: String,
    model: String,
    model_version: String,
    /// Readings applied since this instance started tracking the device.
    readings: u64,
    window_fill: usize,
    window_capacity: usize,
    /// Epoch ms of the newest reading.
    last_ts: Option<i64>,
    /// Score of the last scored batch (what the detector strategy
    /// thresholds; the MSE for `fixed`).
    last_score: Option<f64>,
    /// The threshold it was compared with.
    threshold: f64,
    warmed_up: bool,
    /// Id of the device's open alert.
    open_alert: Option<String>,
    /// Per-channel error share of the last scored batch, largest first:
    /// the top 5, or for a model with a grid every channel with error.
    last_shares: Vec<ChannelShareDoc>,
}

#[derive(ToSchema)]
#[schema(as = DevicePage)]
pub struct DevicePageDoc {
    devices: Vec<DeviceDoc>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<String>,
    total: usize,
}

#[derive(ToSchema)]
#[schema(as = ScorePoint)]
pub struct ScorePointDoc {
    /// Epoch ms of the device's newest reading when the score was seen.
    ts: i64,
    score: f64,
    threshold: f64,
}

#[derive(ToSchema)]
#[schema(as = DeviceScores)]
pub struct DeviceScoresDoc {
    device: String,
    threshold: f64,
    open_alert: Option<String>,
    /// Oldest first.
    points: Vec<ScorePointDoc>,
}

/// A loaded model.
#[derive(ToSchema)]
#[schema(as = Model)]
pub struct ModelDoc {
    name: String,
    version: String,
    /// The network: `forecaster`, `per_variable`, `autoencoder` or
    /// `convlstm`.
    kind: String,
    /// The schema: channel names in the order the model expects them.
    channels: Vec<String>,
    /// The context channels among them (setpoints, commands, modes): read
    /// as inputs (readings must carry them), never scored, named in an
    /// alert or alarmed on. Empty: every channel is monitored.
    context: Vec<String>,
    /// Networks trained from their own seeds whose forecasts are averaged
    /// (an ensemble); 1: a single network.
    members: usize,
    /// Readings per forecast batch.
    horizon: usize,
    /// Readings kept per device.
    window: usize,
    /// The detector strategy's threshold (for `dynamic`, its floor).
    threshold: f64,
    /// Detector strategy: `fixed`, `gaussian` or `dynamic`.
    strategy: String,
    /// Where inference runs: `cpu` or `cuda:N`.
    device: String,
    /// The fault classifier's version that diagnoses open alerts; absent
    /// without one (`model.diagnosis`).
    diagnosis: Option<String>,
    /// The plate the monitored channels are laid out on; absent for a
    /// model without a grid.
    #[schema(required = false)]
    grid: ModelGridDoc,
}

#[derive(ToSchema)]
#[schema(as = ModelList)]
pub struct ModelListDoc {
    models: Vec<ModelDoc>,
}

#[derive(ToSchema)]
#[schema(as = ReloadResult)]
pub struct ReloadResultDoc {
    reloaded: bool,
    model: ModelDoc,
    previous: Option<ModelDoc>,
}

#[derive(ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorDetailDoc {
    /// Stable code: bad_parameter, bad_request, not_found, method_not_allowed,
    /// payload_too_large, timeout, unauthorized, forbidden, model_rejected,
    /// unavailable, internal.
    code: String,
    message: String,
    /// The offending parameter or body field (400 bad_parameter only).
    parameter: Option<String>,
}

/// Every error response.
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorDoc {
    error: ErrorDetailDoc,
}

#[derive(ToSchema)]
#[schema(as = ReadinessChecks)]
pub struct ReadinessChecksDoc {
    model_loaded: bool,
    partitions_assigned: usize,
    broker_reachable: bool,
    shutting_down: bool,
}

#[derive(ToSchema)]
#[schema(as = Readiness)]
pub struct ReadinessDoc {
    ready: bool,
    checks: ReadinessChecksDoc,
    /// A sentence per failing check.
    reasons: Vec<String>,
}
