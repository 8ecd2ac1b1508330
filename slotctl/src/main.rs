//! The `slotctl` binary: all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    slotctl::cli::main()
}
