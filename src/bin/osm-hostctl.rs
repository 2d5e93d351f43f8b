//! `osm-hostctl`: the command-line client of osm-hostd. See [`osm_host::cli`].

fn main() -> std::process::ExitCode {
    osm_host::cli::main()
}
