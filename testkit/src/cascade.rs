//! One of Cascade's own server binaries, started with its listeners on free ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use cascade_config::{CascadeConfig, ServiceSection};
use tempfile::TempDir;

use crate::http::http_get;
use crate::process::{ChildProcess, free_port};
use crate::{HarnessError, Result, io_err};

/// Path of a workspace binary (`cascade-edge`, ...): `$CASCADE_BIN_DIR/<name>`, else next to
/// the running test executable's profile directory (`target/<profile>/<name>`), which is where
/// `cargo test --workspace` builds it.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("CASCADE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().map_err(io_err("locate the test executable"))?;
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    HarnessError::Service(format!(
                        "cannot derive the target dir from {}",
                        exe.display()
                    ))
                })?
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Service(format!(
            "{} does not exist; build it with `cargo build --workspace` (or set CASCADE_BIN_DIR)",
            path.display()
        )))
    }
}

/// A running Cascade server.
pub struct CascadeProcess {
    process: ChildProcess,
    binary: String,
    section: String,
    env: Vec<(String, String)>,
    /// Every listener of the service by field name (`listen`, `admin_listen`, ...).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// The generated config file.
    pub config_path: PathBuf,
    _dir: TempDir,
}

impl CascadeProcess {
    /// Starts `binary`, whose config section is `section` (`edge`, `origin`, `shield`,
    /// `purge_bus`, `router`). `config_toml` is written as its config file; every listener of the section
    /// is moved to a free loopback port through `CASCADE_<SECTION>__<FIELD>` variables. Returns
    /// once `/readyz` answers 200 (the service says it can take traffic).
    pub fn start(binary: &str, section: &str, config_toml: &str) -> Result<Self> {
        Self::start_with_env(binary, section, config_toml, &[])
    }

    /// As [`CascadeProcess::start`], with extra environment variables.
    pub fn start_with_env(
        binary: &str,
        section: &str,
        config_toml: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        let config_path = dir.path().join("cascade.toml");
        std::fs::write(&config_path, config_toml).map_err(io_err("write the config file"))?;
        let mut all_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut listeners = Vec::new();
        for field in listener_fields(section)? {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            all_env.push((
                format!(
                    "CASCADE_{}__{}",
                    section.to_ascii_uppercase(),
                    field.to_ascii_uppercase()
                ),
                addr.to_string(),
            ));
            listeners.push((field, addr));
        }
        let mut this = Self::spawn(binary, section, config_path, listeners, all_env, &[], dir)?;
        this.wait_ready(Duration::from_secs(30))?;
        Ok(this)
    }

    /// Starts a second instance with this one's config, listeners and environment plus
    /// `--upgrade`, without waiting: it takes over the listening sockets once this instance
    /// gets SIGQUIT. Use [`CascadeProcess::wait_until_ready`] afterwards.
    pub fn spawn_upgrade(&self) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        Self::spawn(
            &self.binary,
            &self.section,
            self.config_path.clone(),
            self.listeners.clone(),
            self.env.clone(),
            &["--upgrade"],
            dir,
        )
    }

    /// Starts a new instance with this (stopped) one's config, listeners and environment, and
    /// waits until it is ready: a restart.
    pub fn start_again(&self) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir"))?;
        let mut again = Self::spawn(
            &self.binary,
            &self.section,
            self.config_path.clone(),
            self.listeners.clone(),
            self.env.clone(),
            &[],
            dir,
        )?;
        again.wait_ready(Duration::from_secs(30))?;
        Ok(again)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.process.wait_timeout(timeout)?.ok_or_else(|| {
            HarnessError::Service(format!(
                "did not exit within {timeout:?}; output:\n{}",
                self.process.log_tail()
            ))
        })
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_until_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready(timeout)
    }

    fn spawn(
        binary: &str,
        section: &str,
        config_path: PathBuf,
        listeners: Vec<(&'static str, SocketAddr)>,
        env: Vec<(String, String)>,
        args: &[&str],
        dir: TempDir,
    ) -> Result<Self> {
        let mut command = Command::new(binary_path(binary)?);
        command
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG");
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let process = ChildProcess::spawn(binary, command, &dir.path().join("service.log"))?;
        Ok(Self {
            process,
            binary: binary.to_owned(),
            section: section.to_owned(),
            env,
            listeners,
            config_path,
            _dir: dir,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let admin = self.addr("admin_listen")?;
        let deadline = Instant::now() + timeout;
        loop {
            self.process.ensure_running()?;
            if http_get(admin, "/readyz").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Service(format!(
                    "/readyz at {admin} never answered 200; output:\n{}",
                    self.process.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Address of listener `field`.
    pub fn addr(&self, field: &str) -> Result<SocketAddr> {
        self.listeners
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, a)| *a)
            .ok_or_else(|| HarnessError::Service(format!("no listener named {field}")))
    }

    /// Sends `signal` and waits up to `timeout` for the exit; returns the status and how long
    /// the process took to exit.
    pub fn stop_with(&mut self, signal: i32, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        self.process.signal(signal)?;
        match self.process.wait_timeout(timeout)? {
            Some(status) => Ok((status, start.elapsed())),
            None => Err(HarnessError::Service(format!(
                "did not exit within {timeout:?}; output:\n{}",
                self.process.log_tail()
            ))),
        }
    }

    /// The value of the metric `name` on the admin listener's `/metrics`, summed over its
    /// label sets (0 when it is absent or the page cannot be read).
    pub fn metric(&self, name: &str) -> f64 {
        let Ok(admin) = self.addr("admin_listen") else {
            return 0.0;
        };
        http_get(admin, "/metrics")
            .map(|page| page.text())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum()
    }

    /// The underlying process (for its log or signals).
    pub fn process(&self) -> &ChildProcess {
        &self.process
    }
}

fn listener_fields(section: &str) -> Result<Vec<&'static str>> {
    let defaults = CascadeConfig::default();
    let listeners = match section {
        "origin" => defaults.origin.listeners(),
        "shield" => defaults.shield.listeners(),
        "edge" => defaults.edge.listeners(),
        "purge_bus" => defaults.purge_bus.listeners(),
        "router" => defaults.router.listeners(),
        other => {
            return Err(HarnessError::Service(format!(
                "no server section named {other}"
            )));
        }
    };
    Ok(listeners.into_iter().map(|(field, _)| field).collect())
}

impl Drop for CascadeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let state = match self.process.ensure_running() {
                Ok(()) => "still running".to_owned(),
                Err(e) => e.to_string(),
            };
            eprintln!(
                "--- {} ({state}); output:\n{}",
                self.config_path.display(),
                self.process.log_tail()
            );
        }
    }
}
