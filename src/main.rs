//! The `bote` binary: everything lives in the library; see `bote::cli`.

fn main() -> std::process::ExitCode {
    bote::cli::main()
}
