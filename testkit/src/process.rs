//! A child process owned by a test: output captured to a log file, killed with the test.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result, io_err};

/// A free loopback port for a service under test.
///
/// Ports come from 20000–32767, below the kernel's ephemeral range (32768+), so they cannot be
/// taken between this call and the service's bind by the `bind(:0)` or outgoing connections of
/// concurrently running tests. A process-wide counter (seeded by the pid, so concurrent test
/// binaries start apart) hands each port out once; each is checked by binding it.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % COUNT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..COUNT {
        let candidate = FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % COUNT;
        let port = u16::try_from(candidate)
            .map_err(|_| HarnessError::Service("port out of range".into()))?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(HarnessError::Service("no free port in 20000-32767".into()))
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // A connect to an unbound port in the ephemeral range can connect to itself; that is
        // not a listener.
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            && stream.local_addr().ok() != Some(addr)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running child. Dropping it sends SIGTERM, waits briefly, then SIGKILLs.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with stdout and stderr appended to `log`. The child is also killed if
    /// the thread that spawned it dies (so a panicking test leaves nothing behind).
    pub fn spawn(name: impl Into<String>, mut command: Command, log: &Path) -> Result<Self> {
        let name = name.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err("duplicate the log file handle"))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(io_err(format!(
            "spawn {name} ({:?})",
            command.get_program()
        )))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Where the output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured output so far (last 4 KiB), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Everything the process printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log tail if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::Service(format!(
                "{} exited early with {status}; its output:\n{}",
                self.name,
                self.log_tail()
            ))),
            Err(e) => Err(HarnessError::Io {
                what: format!("check on {}", self.name),
                source: e,
            }),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| HarnessError::Service(format!("{}: pid does not fit pid_t", self.name)))?;
        // SAFETY: kill(2) on a pid we own; no memory is touched.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(HarnessError::Io {
                what: format!("signal {}", self.name),
                source: std::io::Error::last_os_error(),
            })
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err(format!("wait for {}", self.name)))?
            {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self
            .child
            .try_wait()
            .map_err(io_err(format!("wait for {}", self.name)))?
        {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        let _ = self.child.kill();
        self.child
            .wait()
            .map_err(io_err(format!("reap {}", self.name)))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
