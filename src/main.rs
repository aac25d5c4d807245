//! The `hub` binary: reads the config and runs the node until SIGINT/SIGTERM.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hub", version, about = "Real-time hub: channels, presence, history over WebSocket")]
struct Cli {
    /// TOML config file.
    #[arg(long, short, env = "HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Override any config key: --set gateway.ping_interval=10s (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shortcut for --set listen=ADDR.
    #[arg(long)]
    listen: Option<String>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "HUB_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Load and validate the config, print it, and exit.
    CheckConfig,
    /// Run the store's migrations and exit (the hub also runs them at start-up).
    Migrate,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    if cli.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let mut overrides = cli.set.clone();
    if let Some(listen) = &cli.listen {
        overrides.push(format!("listen=\"{listen}\""));
    }
    let config = match hub::config::Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hub: bad config: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("{}", toml_like(&config));
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if matches!(cli.command, Some(Command::Migrate)) {
        return match runtime.block_on(hub::store::SqlStore::open(&config.store)) {
            Ok(_) => {
                println!("store migrated");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hub: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        // Tests and scripts read the bound address from this line (listen may use port 0).
        println!("hub listening on {}", listener.local_addr()?);
        hub::run(listener, config, shutdown_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn toml_like(config: &hub::config::Config) -> String {
    serde_json::to_string_pretty(config).unwrap_or_default()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
