//! The arguments of the host's commands other than `serve`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{DbConfig, KafkaConfig, ModulesArgs, ServeArgs, parse_duration};

/// Arguments of `modules`.
#[derive(Debug, Args)]
pub struct ModulesCommand {
    #[command(subcommand)]
    pub action: ModulesAction,
    /// Who makes the change, for the history (default: $USER).
    #[arg(long, global = true)]
    pub by: Option<String>,
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub modules: ModulesArgs,
}

/// What `modules` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModulesAction {
    /// Validate a module (manifest, component and samples beside it) exactly
    /// as a replica would load it, store it and make it live everywhere.
    Push {
        /// The manifest (.toml).
        manifest: PathBuf,
        /// Run it in shadow beside the live version (answers compared, not
        /// stored) instead of making it live.
        #[arg(long)]
        shadow: bool,
    },
    /// What a module's shadow version answered differently, on every replica.
    Diff { name: String },
    /// Make a module's shadow version live.
    Promote { name: String },
    /// The live version of every stored module.
    List,
    /// A module's pushes, rollbacks and removals, and its stored versions.
    History { name: String },
    /// Make the previous version live again, or `name@version`.
    Rollback { target: String },
    /// Take a module out of service (its versions stay for history).
    Remove { name: String },
}

/// A normalizer project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
}

/// Arguments of `new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The module's name: lowercase letters, digits and hyphens.
    pub name: String,
    /// The language of the module.
    #[arg(long, value_enum)]
    pub lang: Language,
    /// The folder to create (default: `./<name>`); it must not exist.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Arguments of `capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The topic to read.
    #[arg(long)]
    pub topic: String,
    /// How many records to write at most.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Only records with this key (its UTF-8 text).
    #[arg(long)]
    pub key: Option<String>,
    /// Read from each partition's first record instead of its last `count`.
    #[arg(long)]
    pub from_beginning: bool,
    /// Give up waiting for records after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write to this file (appending) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaConfig,
}

/// Arguments of `normalize`.
#[derive(Debug, Args)]
pub struct NormalizeArgs {
    /// A bare normalizer component (.wasm) to run instead of the built-in
    /// default, without a manifest (no routing, no fallback, default limits).
    #[arg(long, conflicts_with_all = ["manifest", "dir"])]
    pub module: Option<PathBuf>,
    /// A module manifest (.toml): judged exactly as the live host judges it
    /// at load (contract, limits, samples gate), each sample's routing shown.
    #[arg(long, conflicts_with = "dir")]
    pub manifest: Option<PathBuf>,
    /// A whole modules directory (what `NORMALIZERS_DIR` would hold).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write each sample's observed fields as its `expected` ones (with
    /// --manifest or --dir), showing what changed, then judge again.
    #[arg(long)]
    pub bless: bool,
    /// Run again whenever a file beside the manifests changes.
    #[arg(long)]
    pub watch: bool,
    /// Sample file (JSON lines); standard input when absent or `-`. With
    /// --manifest or --dir, its records go through the modules' routing.
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub modules: ModulesArgs,
}

/// Arguments of `renormalize`.
#[derive(Debug, Args)]
pub struct RenormalizeArgs {
    /// Only rows of this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only rows at or after this Kafka offset.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Only rows at or before this Kafka offset.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Report what would change without writing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Arguments of `import-legacy`.
#[derive(Debug, Args)]
pub struct ImportLegacyArgs {
    /// The original service's database (read only; nothing in it changes),
    /// e.g. `postgres://user:password@old-host:5432/notifications`.
    #[arg(long = "from", env = super::env::LEGACY_DATABASE_URL, hide_env_values = true)]
    pub from: String,
    /// Instead of copying rows: commit the consumer group's (`KAFKA_GROUP_ID`)
    /// offsets at the positions the original recorded in `kafka_offsets`
    /// (the next offset it would have read of each partition), so that the
    /// host starts where the original stopped. Run it with the original
    /// stopped and before the host first consumes.
    #[arg(long)]
    pub offsets: bool,
    /// With `--offsets`: commit even when the group already has committed
    /// offsets (they are replaced).
    #[arg(long, requires = "offsets")]
    pub force: bool,
    /// Copy only the rows created through the original's API
    /// (`source_topic 'api'`): for a host that reads the topics' history
    /// from the earliest offset itself, which holds the Kafka records.
    #[arg(long, conflicts_with = "offsets")]
    pub only_api: bool,
    /// Rows per batch; each batch is one transaction, and an interrupted
    /// import continues after the last one committed.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch_size: u32,
    /// The host's database (`DATABASE_URL`, `DATABASE_SCHEMA`).
    #[command(flatten)]
    pub db: DbConfig,
    /// The broker and group, for `--offsets`.
    #[command(flatten)]
    pub kafka: KafkaConfig,
}

/// Arguments of `compare-legacy`.
#[derive(Debug, Args)]
pub struct CompareLegacyArgs {
    /// The original service's database (read only).
    #[arg(long = "from", env = super::env::LEGACY_DATABASE_URL, hide_env_values = true)]
    pub from: String,
    /// The host's base URL, e.g. `http://notification-service:3000` (run
    /// with `API_COMPAT=original`).
    #[arg(long)]
    pub api: String,
    /// How many orders to compare, picked at random among the original's.
    #[arg(long, default_value_t = 200, conflicts_with = "all")]
    pub sample: u32,
    /// Compare every order the original holds.
    #[arg(long)]
    pub all: bool,
    /// The host's read token, when it has one.
    #[arg(long, env = super::env::READ_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// Differences printed at most (the summary counts them all).
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Rows only the host holds (records it consumed itself, after the
    /// switch) are not differences.
    #[arg(long)]
    pub allow_host_rows: bool,
    /// Longest one request to the host may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}
