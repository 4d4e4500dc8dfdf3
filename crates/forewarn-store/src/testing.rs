//! A throwaway PostgreSQL cluster for tests (feature `test-support`).
//!
//! [`PgCluster::start`] runs Debian's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `$FOREWARN_PG_BIN`): `initdb`
//! into a fresh directory under the temp dir, then `postgres` on a free
//! port of 127.0.0.1 with its Unix socket in that directory, trust
//! authentication for the superuser `forewarn`, and fsync off. As root
//! (initdb refuses to run as root) both run as the `postgres` user, on a
//! directory chowned to it.
//!
//! The server is started by a small shell watchdog that reads its standard
//! input from this process: when the pipe closes (the cluster is dropped,
//! or this process exits or is killed) the watchdog stops the server (fast
//! shutdown) and removes the directory. So a cluster shared by a whole test
//! binary ([`PgCluster::shared`]) is cleaned up too.
//!
//! A missing installation is an error with a clear message, never a
//! silent skip: the test command installs Postgres (`scripts/setup.sh`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The superuser created by `initdb` (trust authentication).
pub const SUPERUSER: &str = "forewarn";

/// A running throwaway cluster; stopped and removed on drop.
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    watchdog: Child,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

const WATCHDOG: &str = r#"
dir=$1 port=$2 bin=$3 ssl=$4
"$bin/postgres" -D "$dir/data" -p "$port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$dir" -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200 -c shared_buffers=16MB \
    -c ssl="$ssl" >"$dir/server.log" 2>&1 &
pid=$!
read -r _ || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl PgCluster {
    /// One cluster for the whole test binary, started on first use and
    /// stopped when the process exits. Panics with the reason when it
    /// cannot start.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| Self::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Initialises and starts a fresh cluster on a free port, waiting until
    /// it accepts connections (at most 60 s).
    pub fn start() -> Result<Self, String> {
        Self::start_on_port(free_port()?)
    }

    /// [`PgCluster::start`] on a given port of 127.0.0.1 (e.g. one a
    /// service was told to use before the server existed).
    pub fn start_on_port(port: u16) -> Result<Self, String> {
        Self::start_with(port, None)
    }

    /// [`PgCluster::start`] with `ssl=on`, serving the PEM certificate
    /// chain and key given (copied into the data directory as
    /// `server.crt` / `server.key`, where the server reads them).
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self, String> {
        Self::start_with(free_port()?, Some((cert, key)))
    }

    fn start_with(port: u16, tls: Option<(&Path, &Path)>) -> Result<Self, String> {
        let bin = bin_dir()?;
        let as_root = is_root();
        let base = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "forewarn-pg-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if as_root {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        run(as_postgres(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ]))
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.join("data").join(name);
                std::fs::copy(from, &to)
                    .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
                // The server refuses a key others can read.
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("chmod {}: {e}", to.display()))?;
                if as_root {
                    run(Command::new("chown").arg("postgres:postgres").arg(&to))?;
                }
            }
        }
        let watchdog = as_postgres(as_root, Path::new("sh"))
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&dir)
            .arg(port.to_string())
            .arg(&bin)
            .arg(if tls.is_some() { "on" } else { "off" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the Postgres watchdog shell: {e}"))?;
        let cluster = Self {
            dir,
            port,
            bin,
            watchdog,
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", SUPERUSER, "-d", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .status()
                .map_err(|e| format!("running pg_isready: {e}"))?;
            if ready.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the test Postgres server did not accept connections on 127.0.0.1:{} within {timeout:?}; \
             its log:\n{}",
            self.port,
            self.server_log()
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket, server.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The URL of database `db` as the superuser over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` with `psql` on database `db`; returns its unaligned,
    /// tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        run(Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", SUPERUSER, "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql))
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("forewarn_test_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // EOF on the watchdog's stdin: it stops the server and removes the
        // directory.
        drop(self.watchdog.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// Where the server binaries are: `$FOREWARN_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` with an `initdb`.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FOREWARN_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
        return Err(format!("FOREWARN_PG_BIN={} has no initdb", dir.display()));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries not found: no /usr/lib/postgresql/<version>/bin/initdb \
         (and FOREWARN_PG_BIN is not set). The Postgres tests need Debian's `postgresql` \
         package: run `bash scripts/setup.sh` (scripts/test.sh does) or \
         `apt-get install postgresql`."
            .to_owned()
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, run as the `postgres` user when this process is root.
fn as_postgres(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A port of 127.0.0.1 that nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}
