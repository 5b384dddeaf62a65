//! The `socklab` binary: parse the command line, set up logging, run.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use socklab::cli::{Cli, Command, CompletionTarget};
use socklab::model::ModelKind;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        if let Err(why) = args.check() {
            usage_error("serve", why);
        }
    }
    if let Command::Lab(args) = &cli.command {
        if let Err(why) = args.check() {
            usage_error("lab", why);
        }
    }
    if let Command::Check(args) = &cli.command {
        if let Err(why) = args.check() {
            usage_error("check", why);
        }
    }
    init_logging();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command: its exit status when it has one of its own (check:
/// 1 when a case failed), else success.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => {
            let passed = socklab::check::run(args.into_options())?;
            return Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Serve(args) => socklab::server::run(args.into_options()),
        Command::Send(args) => socklab::client::send::run(args.into_options()),
        Command::Connect(args) => socklab::client::talk::connect(&args.into_options()),
        Command::Listen(args) => socklab::client::talk::listen(&args.into_options()),
        Command::Completions { shell } => completions(shell),
        Command::Bench(args) => socklab::client::bench::run(args.into_options()),
        Command::Lab(args) => socklab::lab::run(args.into_options()),
        Command::Relay(args) => socklab::relay::run(args.into_options()),
        Command::Merge(args) => socklab::client::merge::run(args.into_options()),
        Command::Models => models(),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// `socklab models`: one line per model, with its source file.
fn models() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for model in ModelKind::all() {
        writeln!(
            out,
            "{:<13} {}  ({})",
            model.name(),
            model.summary(),
            model.source_file()
        )?;
        if *model == ModelKind::Uring {
            // Its techniques, one line each, in the same shape.
            let default = socklab::model::uring_features::UringFeatures::DEFAULT;
            let what = format!("{default}: the techniques on without --uring");
            for (name, what) in [("default", what.as_str()), ("none", "every technique off")]
                .into_iter()
                .chain(socklab::model::uring_features::FEATURES)
            {
                writeln!(out, "  --uring {name:<15} {what}  (src/model/uring.rs)")?;
            }
        }
    }
    Ok(())
}

/// Exits with status 2 and `why`, shaped as clap's own usage errors are,
/// under the usage line of `subcommand`.
fn usage_error(subcommand: &str, why: String) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let found = cli.find_subcommand_mut(subcommand).map(std::mem::take);
    let mut command = found.unwrap_or(cli);
    command
        .error(clap::error::ErrorKind::ArgumentConflict, why)
        .exit()
}

/// Shell completions or the man page, generated from the clap definitions.
fn completions(target: CompletionTarget) -> anyhow::Result<()> {
    use clap_complete::Shell;
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    let shell = match target {
        CompletionTarget::Man => {
            clap_mangen::Man::new(command).render(&mut out)?;
            return Ok(out.flush()?);
        }
        CompletionTarget::Bash => Shell::Bash,
        CompletionTarget::Zsh => Shell::Zsh,
        CompletionTarget::Fish => Shell::Fish,
        CompletionTarget::Elvish => Shell::Elvish,
        CompletionTarget::Powershell => Shell::PowerShell,
    };
    clap_complete::generate(shell, &mut command, "socklab", &mut out);
    Ok(out.flush()?)
}

/// Logs go to stderr; `RUST_LOG` picks the level (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// A closed stdout (`socklab models | head -1`) is a normal end, not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
