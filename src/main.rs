//! The `elbo` command: parse arguments, run the subcommand, map errors to exit codes
//! (0 success, 1 error, 2 bad usage, 130 interrupted).

mod cli;

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`elbo schedule --kind cosine | head`), instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    elbo::par::tune_allocator();
    std::process::exit(cli::run());
}
