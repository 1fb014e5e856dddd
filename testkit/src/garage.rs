//! A single-node Garage S3 server with one bucket and one access key.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_config::{S3StorageConfig, Secret};
use tempfile::TempDir;

use crate::http::http_get;
use crate::process::{ChildProcess, free_port};
use crate::{HarnessError, Result, find_tool, io_err};

/// The Garage version `.ci/install-tools` installs.
pub const GARAGE_VERSION: &str = "2.5.0";

/// A running Garage.
pub struct Garage {
    process: ChildProcess,
    s3_port: u16,
    access_key: String,
    secret_key: Secret,
    bucket: String,
    _dir: TempDir,
}

/// The region written into Garage's config; clients must use the same.
const REGION: &str = "us-east-1";

impl Garage {
    /// Starts Garage on free ports with a fresh bucket `cascade-test` and waits until its S3
    /// API answers.
    pub fn start() -> Result<Self> {
        let bin = find_tool(
            "garage",
            "CASCADE_GARAGE_BIN",
            &format!("garage-{GARAGE_VERSION}/bin/garage"),
        )?;
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir for garage"))?;
        let (rpc_port, s3_port) = (free_port()?, free_port()?);
        let root = dir.path().display().to_string();
        let config = format!(
            "metadata_dir = \"{root}/meta\"\n\
             data_dir = \"{root}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{}\"\n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n",
            random_hex(32)?
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).map_err(io_err("write garage.toml"))?;
        let access_key = format!("GK{}", random_hex(12)?);
        let secret_key = Secret::new(random_hex(32)?);
        let bucket = "cascade-test".to_owned();
        let mut command = Command::new(bin);
        command
            .arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", secret_key.expose())
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "garage=warn")
            .current_dir(dir.path());
        let mut process = ChildProcess::spawn("garage", command, &dir.path().join("garage.log"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        // Any HTTP answer (403 for an unsigned request) means the S3 API is up.
        while http_get(([127, 0, 0, 1], s3_port).into(), "/").is_err() {
            process.ensure_running()?;
            if Instant::now() > deadline {
                return Err(HarnessError::Service(format!(
                    "garage S3 API did not answer; output:\n{}",
                    process.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            process,
            s3_port,
            access_key,
            secret_key,
            bucket,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A `[storage.s3]` section for this server.
    pub fn storage_config(&self) -> S3StorageConfig {
        S3StorageConfig {
            endpoint: self.endpoint(),
            region: REGION.into(),
            bucket: self.bucket.clone(),
            path_style: true,
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel and never
    /// answered, as a hung store does.
    pub fn pause(&self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.process.signal(libc::SIGCONT)
    }

    /// The server's output so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
