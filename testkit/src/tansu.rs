//! A tansu Kafka-protocol broker: in-memory storage, or kept in a Garage bucket so that it
//! survives a restart like a real cluster.

use std::process::Command;
use std::time::Duration;

use cascade_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tempfile::TempDir;

use crate::garage::Garage;
use crate::process::{ChildProcess, free_port, wait_for_tcp};
use crate::{HarnessError, Result, find_tool, io_err};

/// The tansu version `.ci/install-tools` installs.
pub const TANSU_VERSION: &str = "0.6.0";

/// A running broker.
pub struct Tansu {
    process: ChildProcess,
    port: u16,
    storage: Storage,
    _dir: TempDir,
}

/// Where a broker keeps its data.
#[derive(Debug, Clone)]
enum Storage {
    Memory,
    S3 {
        env: Vec<(String, String)>,
        url: String,
    },
}

impl Tansu {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        Self::start_on(free_port()?, Storage::Memory)
    }

    /// Starts a broker that keeps its topics, offsets and groups in `garage`'s bucket, so a
    /// [`Tansu::restart`] finds them again.
    pub fn start_persistent(garage: &Garage) -> Result<Self> {
        let config = garage.storage_config();
        let env = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), config.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                config.secret_access_key.expose().to_owned(),
            ),
            ("AWS_DEFAULT_REGION".to_owned(), config.region.clone()),
            ("AWS_ENDPOINT".to_owned(), config.endpoint.clone()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ];
        let url = format!("s3://{}/", config.bucket);
        Self::start_on(free_port()?, Storage::S3 { env, url })
    }

    /// Stops the broker (SIGTERM) and starts a new one on the same port with the same storage.
    /// With in-memory storage the new broker has no topics, offsets or groups.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        *self = Self::start_on(self.port, self.storage.clone())?;
        Ok(())
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(10)).map(|_| ())
    }

    fn start_on(port: u16, storage: Storage) -> Result<Self> {
        let bin = find_tool(
            "tansu",
            "CASCADE_TANSU_BIN",
            &format!("tansu-{TANSU_VERSION}/bin/tansu"),
        )?;
        let dir = tempfile::tempdir().map_err(io_err("create a temp dir for tansu"))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(bin);
        command
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(dir.path());
        match &storage {
            Storage::Memory => {
                command.args(["--storage-engine", "memory://tansu/"]);
            }
            Storage::S3 { env, url } => {
                command.args(["--storage-engine", url]);
                command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
        }
        let mut process = ChildProcess::spawn("tansu", command, &dir.path().join("tansu.log"))?;
        if !wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20)) {
            process.ensure_running()?;
            return Err(HarnessError::Service(format!(
                "tansu did not listen on {port}; output:\n{}",
                process.log_tail()
            )));
        }
        Ok(Self {
            process,
            port,
            storage,
            _dir: dir,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `[kafka]` section pointing at this broker.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: vec![self.bootstrap()],
            ..KafkaConfig::default()
        }
    }

    /// An rdkafka client config for this broker, built from [`Tansu::kafka_config`], with
    /// `fetch.wait.max.ms` lowered because tansu holds every fetch for the full wait.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in self.kafka_config().client_properties() {
            config.set(key, value);
        }
        config.set("fetch.wait.max.ms", "5");
        config
    }

    /// Creates `topic` (tansu does not auto-create topics).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| HarnessError::Service(format!("kafka admin client: {e}")))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &options,
            )
            .await
            .map_err(|e| HarnessError::Service(format!("create topic {topic}: {e}")))?;
        for result in results {
            result
                .map_err(|(t, code)| HarnessError::Service(format!("create topic {t}: {code}")))?;
        }
        Ok(())
    }

    /// The broker's output so far.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
