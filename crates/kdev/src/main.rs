#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kdev::main()
}
