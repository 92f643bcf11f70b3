//! The `elbo` command: parse arguments, run the subcommand, map errors to exit codes
//! (0 success, 1 error, 2 bad usage, 130 interrupted).

mod cli;

fn main() {
    std::process::exit(cli::run());
}
