//! `osm-hostctl publish` / `unpublish`: a container's HTTPS vhosts and TLS streams
//! through the host's NGINX.

use clap::Args;

use super::calls::Daemon;
use super::exit::CliError;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("entries").required(true).multiple(true)))]
pub struct PublishArgs {
    /// Container name
    pub name: String,
    /// An HTTPS vhost for HOST on 443 (and a redirect from HTTP on 80) proxied to the
    /// container's PORT; repeat for several
    #[arg(long = "http", value_name = "HOST:PORT", value_parser = parse_http, group = "entries")]
    pub http: Vec<(String, u16)>,
    /// TLS on the host's PUBLIC port, terminated by NGINX, plain TCP to the container's
    /// PORT; repeat for several
    #[arg(long = "tls-stream", value_name = "PUBLIC:PORT", value_parser = parse_stream, group = "entries")]
    pub tls_streams: Vec<(u16, u16)>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true)))]
pub struct UnpublishArgs {
    /// Container name
    pub name: String,
    /// The vhost of this host name; repeat for several
    #[arg(long = "http", value_name = "HOST", group = "which")]
    pub hosts: Vec<String>,
    /// The TLS stream on this public port; repeat for several
    #[arg(long = "tls-stream", value_name = "PUBLIC", value_parser = parse_port, group = "which")]
    pub tls_streams: Vec<u16>,
    /// Everything the container publishes
    #[arg(long, group = "which", conflicts_with_all = ["hosts", "tls_streams"])]
    pub all: bool,
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port; give 1-65535")),
    }
}

fn parse_http(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT (e.g. acme.example.com:3000)"))?;
    Ok((host.to_string(), parse_port(port)?))
}

fn parse_stream(text: &str) -> Result<(u16, u16), String> {
    let (public, port) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not PUBLIC:PORT (e.g. 8883:1883)"))?;
    Ok((parse_port(public)?, parse_port(port)?))
}

pub async fn publish(daemon: &Daemon, args: PublishArgs) -> Result<(), CliError> {
    let http: Vec<(&str, u16)> = args.http.iter().map(|(h, p)| (h.as_str(), *p)).collect();
    let changed = daemon
        .manager
        .publish(&args.name, &http, &args.tls_streams)
        .await?;
    super::run::say(&if changed {
        format!("published {}", args.name)
    } else {
        format!("{} already publishes that; nothing changed", args.name)
    });
    Ok(())
}

pub async fn unpublish(daemon: &Daemon, args: UnpublishArgs) -> Result<(), CliError> {
    let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
    let changed = daemon
        .manager
        .unpublish(&args.name, &hosts, &args.tls_streams, args.all)
        .await?;
    super::run::say(&if changed {
        format!("unpublished {}", args.name)
    } else {
        format!("{} publishes nothing; nothing changed", args.name)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_clear_errors() {
        assert_eq!(
            parse_http("acme.example.com:3000").unwrap(),
            ("acme.example.com".to_string(), 3000)
        );
        assert!(parse_http("acme.example.com")
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(parse_http("a.b:0").is_err());
        assert!(parse_http("a.b:70000").is_err());
        assert_eq!(parse_stream("8883:1883").unwrap(), (8883, 1883));
        assert!(parse_stream("8883").is_err());
    }
}
