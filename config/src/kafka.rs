//! `[kafka]`: the broker the purge bus publishes to and every edge and shield consumes from.
//! With no brokers configured the services use the embedded in-process transport.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;
use crate::values::{HumanDuration, Secret};

/// Connection to a Kafka-protocol cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`. Empty: the embedded single-machine transport.
    pub brokers: Vec<String>,
    /// Topic that purges are published to, keyed by host.
    pub purge_topic: String,
    /// Topic that nodes publish their purge acknowledgements to.
    pub ack_topic: String,
    /// Topic edges publish viewer analytics records to, consumed by the origin.
    pub analytics_topic: String,
    /// Partitions of the topics when the purge bus creates them.
    pub partitions: u32,
    /// Replication factor of the topics when the purge bus creates them.
    pub replication: u16,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) when the protocol uses SASL.
    pub sasl_mechanism: String,
    /// SASL user name.
    pub sasl_username: String,
    /// SASL password.
    pub sasl_password: Secret,
    /// Longest a consumer fetch waits at the broker for new purges (`fetch.wait.max.ms`).
    /// Kafka answers as soon as data arrives; some Kafka-protocol brokers hold every fetch for
    /// the whole wait, so keep it short where purge latency matters.
    pub fetch_wait: HumanDuration,
    /// How long the purge API waits for the brokers to take a purge before answering 503.
    pub publish_timeout: HumanDuration,
}

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_kafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            purge_topic: "cascade.purge".into(),
            ack_topic: "cascade.purge-acks".into(),
            analytics_topic: "cascade.analytics".into(),
            partitions: 3,
            replication: 1,
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: "PLAIN".into(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            fetch_wait: HumanDuration(Duration::from_millis(10)),
            publish_timeout: HumanDuration::secs(5),
        }
    }
}

impl KafkaConfig {
    /// True when no broker is configured and the embedded transport should be used.
    pub fn is_embedded(&self) -> bool {
        self.brokers.is_empty()
    }

    /// librdkafka client properties for the connection (no producer/consumer specifics).
    /// The SASL password is included: hand the result to the client, never to a log.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut props = vec![
            ("bootstrap.servers", self.brokers.join(",")),
            (
                "security.protocol",
                self.security_protocol.as_kafka().to_owned(),
            ),
        ];
        if self.security_protocol.uses_sasl() {
            props.push(("sasl.mechanism", self.sasl_mechanism.clone()));
            props.push(("sasl.username", self.sasl_username.clone()));
            props.push(("sasl.password", self.sasl_password.expose().to_owned()));
        }
        props
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        for (i, broker) in self.brokers.iter().enumerate() {
            if !is_host_port(broker) {
                p.push(
                    format!("kafka.brokers[{i}]"),
                    format!("{broker:?} is not host:port (e.g. \"127.0.0.1:9092\")"),
                );
            }
        }
        for (field, topic) in [
            ("kafka.purge_topic", &self.purge_topic),
            ("kafka.ack_topic", &self.ack_topic),
            ("kafka.analytics_topic", &self.analytics_topic),
        ] {
            if let Err(why) = check_topic_name(topic) {
                p.push(field, format!("{topic:?} {why}"));
            }
        }
        if self.purge_topic == self.ack_topic {
            p.push("kafka.ack_topic", "must differ from kafka.purge_topic");
        }
        if self.analytics_topic == self.purge_topic || self.analytics_topic == self.ack_topic {
            p.push(
                "kafka.analytics_topic",
                "must differ from kafka.purge_topic and kafka.ack_topic",
            );
        }
        if self.fetch_wait.0 < Duration::from_millis(1)
            || self.fetch_wait.0 > Duration::from_secs(10)
        {
            p.push(
                "kafka.fetch_wait",
                format!("{} is not between 1ms and 10s", self.fetch_wait),
            );
        }
        if self.publish_timeout.0 < Duration::from_millis(100) {
            p.push(
                "kafka.publish_timeout",
                format!("{} is below the 100ms minimum", self.publish_timeout),
            );
        }
        if self.partitions == 0 {
            p.push("kafka.partitions", "must be at least 1");
        }
        if self.replication == 0 {
            p.push("kafka.replication", "must be at least 1");
        }
        if self.security_protocol.uses_sasl()
            && (self.sasl_username.is_empty() || self.sasl_password.is_empty())
        {
            p.push(
                "kafka.sasl_username",
                "SASL needs kafka.sasl_username and kafka.sasl_password (or use security_protocol = \"plaintext\"/\"ssl\")",
            );
        }
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub(crate) fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// Kafka's own rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic.len() > 249 {
        return Err("is not a valid topic name (1 to 249 characters)");
    }
    if topic == "." || topic == ".." {
        return Err("is not a valid topic name");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("is not a valid topic name (use letters, digits, '.', '_' and '-')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_needs_both_parts() {
        assert!(is_host_port("127.0.0.1:9092"));
        assert!(is_host_port("kafka-0.kafka:9092"));
        assert!(!is_host_port("kafka"));
        assert!(!is_host_port(":9092"));
        assert!(!is_host_port("kafka:port"));
        assert!(!is_host_port("kafka:0"));
    }

    #[test]
    fn sasl_properties_only_when_the_protocol_uses_sasl() {
        let mut k = KafkaConfig {
            brokers: vec!["a:1".into(), "b:2".into()],
            ..Default::default()
        };
        let props = k.client_properties();
        assert!(props.contains(&("bootstrap.servers", "a:1,b:2".into())));
        assert!(!props.iter().any(|(k, _)| k.starts_with("sasl")));
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_username = "u".into();
        k.sasl_password = Secret::new("p");
        let props = k.client_properties();
        assert!(props.contains(&("sasl.password", "p".into())));
        assert!(props.contains(&("security.protocol", "sasl_ssl".into())));
    }
}
