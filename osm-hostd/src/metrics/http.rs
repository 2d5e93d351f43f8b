//! A minimal HTTP/1.1 responder for `GET /metrics`, on TCP or a unix socket. One request
//! per connection (`Connection: close`); anything else gets a short error status. A
//! scraper needs no more, and this keeps an HTTP stack out of a root daemon.

use super::{Listen, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `listen`; the accept loop runs as a task until the daemon exits.
pub async fn serve(listen: &Listen, metrics: Arc<Metrics>) -> std::io::Result<()> {
    match listen {
        Listen::Off => Ok(()),
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(answer(s, metrics.clone()));
                    }
                }
            });
            Ok(())
        }
        Listen::Unix(path) => {
            // A socket left by an earlier daemon would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path)?;
            // Readable by any local user, like the read-only half of the bus API, so
            // a Prometheus running as its own user can scrape it.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
            tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(answer(s, metrics.clone()));
                    }
                }
            });
            Ok(())
        }
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, metrics: Arc<Metrics>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut s)).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let (status, ctype, body) = match route(&head) {
        Route::Metrics => {
            let m = metrics.clone();
            match tokio::task::spawn_blocking(move || m.render()).await {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "collecting failed\n".into(),
                ),
            }
        }
        Route::NotFound => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        Route::BadMethod => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
        Route::Bad => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let is_head = head.starts_with("HEAD ");
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !is_head {
        resp.push_str(&body);
    }
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Reads up to the blank line ending the request head; `None` if it never comes.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

fn route(head: &str) -> Route {
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Route::BadMethod;
    }
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route("garbage\r\n\r\n"), Route::Bad);
    }
}
