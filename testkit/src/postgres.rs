//! A throwaway PostgreSQL server (Debian's `postgresql` package): a fresh cluster in a
//! temporary directory, trust authentication on a free loopback port, stopped when dropped.
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ChildProcess, free_port, wait_for_tcp};
use crate::{HarnessError, Result, io_err};

/// A running PostgreSQL.
pub struct Postgres {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CASCADE_POSTGRES_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").is_file())
        .ok_or(HarnessError::NotInstalled {
            program: "postgresql",
            searched: "$CASCADE_POSTGRES_BIN_DIR, /usr/lib/postgresql/*/bin".into(),
        })
}

/// `program args` as the `postgres` user when we are root.
fn as_server_user(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Creates a cluster and starts the server; returns once it accepts connections.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(io_err("create the data dir"))?;
        // SAFETY: geteuid has no preconditions and touches no memory.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(io_err("chown the cluster dir"))?;
            if !chown.success() {
                return Err(HarnessError::Service(
                    "cannot give the cluster dir to postgres".into(),
                ));
            }
        }
        let initdb = as_server_user(&bin.join("initdb"), root)
            .args(["-A", "trust", "-U", "cascade", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .map_err(io_err("run initdb"))?;
        if !initdb.status.success() {
            return Err(HarnessError::Service(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            )));
        }
        let port = free_port()?;
        let mut command = as_server_user(&bin.join("postgres"), root);
        command
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path());
        let log = dir.path().join("postgres.log");
        let process = ChildProcess::spawn("postgres", command, &log)?;
        if !wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30)) {
            return Err(HarnessError::Service(format!(
                "postgres did not start: {}",
                process.log_tail()
            )));
        }
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    /// `postgres://cascade@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://cascade@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's output so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
