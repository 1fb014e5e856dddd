//! Command-line interface shared by every server binary, and config loading behind it.

use std::path::PathBuf;

use cascade_config::CascadeConfig;
use clap::{Args, Command, FromArgMatches};

/// Names and texts of one server binary.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// Short name used in metrics and logs (`edge`).
    pub name: &'static str,
    /// Binary name (`cascade-edge`).
    pub binary: &'static str,
    /// `--version` text.
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Whether the server can take over a running instance's sockets (`--upgrade`).
    pub upgradable: bool,
}

/// Flags every server takes.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TOML configuration file; one file may hold every service's section. Without it, the
    /// built-in local defaults apply. `CASCADE_<SECTION>__<FIELD>` variables override fields.
    #[arg(long, short = 'c', value_name = "FILE", env = "CASCADE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print what is wrong (or that it is fine) and exit.
    #[arg(long)]
    pub check: bool,

    /// Take over the listening sockets of the running instance (zero-downtime upgrade or
    /// config reload); only servers with [`ServiceInfo::upgradable`] offer `--upgrade`.
    #[arg(skip)]
    pub upgrade: bool,
}

impl ServerArgs {
    /// Parses the process arguments; `--help` and `--version` print and exit here.
    pub fn parse(info: &ServiceInfo) -> Self {
        let command = Self::augment_args(
            Command::new(info.binary)
                .version(info.version)
                .about(info.about)
                .after_help("Environment: CASCADE_<SECTION>__<FIELD>=value overrides one field, e.g. CASCADE_EDGE__LISTEN=0.0.0.0:80"),
        );
        let command = if info.upgradable {
            command.arg(
                clap::Arg::new("upgrade")
                    .long("upgrade")
                    .action(clap::ArgAction::SetTrue)
                    .help("Take over the listening sockets of the running instance, then send it SIGQUIT: a zero-downtime upgrade or config reload"),
            )
        } else {
            command
        };
        let matches = command.get_matches();
        match Self::from_arg_matches(&matches) {
            Ok(mut args) => {
                args.upgrade = info.upgradable && matches.get_flag("upgrade");
                args
            }
            Err(e) => e.exit(),
        }
    }

    /// Where the configuration comes from, for messages.
    pub fn config_origin(&self) -> String {
        self.config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into())
    }
}

/// Loads and validates the whole configuration, including the log filter, which the config
/// crate cannot check because it does not know `tracing`'s syntax.
pub fn load_config(args: &ServerArgs) -> Result<CascadeConfig, String> {
    let config = CascadeConfig::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    crate::telemetry::parse_filter(&config.log.level)
        .map_err(|e| format!("{}: log.level: {e}", args.config_origin()))?;
    Ok(config)
}
