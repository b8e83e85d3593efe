//! `hangar`: the server binary. Everything of substance lives in the `server` library.

use std::process::ExitCode;

use server::{config::USAGE, Config, Flags};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Administrative subcommands: everything from the command word on is theirs; options before it
    // (--data-dir, --config) are the server's.
    let split = args.iter().position(|a| server::cli::COMMANDS.contains(&a.as_str())).unwrap_or(args.len());
    let (server_args, command) = args.split_at(split);
    let flags = match Flags::parse(server_args.iter().cloned()) {
        Ok(flags) => flags,
        Err(err) => {
            eprintln!("hangar: {err}");
            return ExitCode::from(2);
        }
    };
    if flags.help {
        print!("{USAGE}\n{}", server::cli::USAGE);
        return ExitCode::SUCCESS;
    }
    if flags.version {
        println!("hangar {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&flags, |key| std::env::var(key).ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("hangar: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hangar: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if !command.is_empty() {
        return match runtime.block_on(server::cli::run(&config, command)) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("hangar: {}", err.message);
                ExitCode::from(err.status)
            }
        };
    }
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("hangar: {err}");
            ExitCode::FAILURE
        }
    }
}
