//! `osm-hostctl`: the command-line client of osm-hostd. See the library crate `osm_hostctl`.

fn main() -> std::process::ExitCode {
    osm_hostctl::main()
}
