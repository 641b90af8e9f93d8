//! Routing a client's HTTP servers through `mcpwatch gateway`, and back.
//!
//! `watch --gateway ADDR` replaces one value of an HTTP server, its `url` (`serverUrl` in
//! Windsurf), with the gateway's URL for it, `ADDR/mcp/<server>`; nothing else in the entry
//! changes (headers still go with every request, and an open gateway forwards them). The
//! original value's exact JSON text is kept in a record in the data dir, `clients/routes.json`,
//! written before the config is: `unwatch` puts that text back byte for byte, so a round trip
//! gives the original file. The gateway has one upstream per name, so two servers of the same
//! name going to different URLs are refused rather than silently merged.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::edit::{literal, Edit, Server, Skip, Transport};
use super::jsonc::Node;

/// The most records kept; far more servers than any machine's clients have.
const MAX_ROUTES: usize = 4096;
/// A record file larger than this is not read.
const MAX_BYTES: u64 = 4 << 20;

/// Where a gateway is, as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// `http://host:port` (and any path prefix), no trailing slash.
    base: String,
}

impl Gateway {
    /// `http://HOST:PORT[/prefix]` or a listen address `HOST:PORT`; an unspecified listen
    /// address (`0.0.0.0`, `[::]`) becomes loopback, which is where a local client reaches it.
    pub fn parse(given: &str) -> anyhow::Result<Gateway> {
        let hint = "write the gateway's URL or listen address, e.g. --gateway http://127.0.0.1:7880 or --gateway 127.0.0.1:7880";
        let given = given.trim();
        let text = if let Ok(addr) = given.parse::<std::net::SocketAddr>() {
            let ip = match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    std::net::Ipv4Addr::LOCALHOST.into()
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    std::net::Ipv6Addr::LOCALHOST.into()
                }
                ip => ip,
            };
            format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
        } else if given.contains("://") {
            given.to_string()
        } else {
            format!("http://{given}")
        };
        let url = reqwest::Url::parse(&text)
            .map_err(|e| anyhow::anyhow!("--gateway {given:?} is not a URL ({e}); {hint}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--gateway {given:?}: the gateway speaks http:// or https://; {hint}");
        }
        if url.host_str().is_none_or(str::is_empty) {
            bail!("--gateway {given:?} has no host; {hint}");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("--gateway {given:?}: leave credentials out of the URL; the config's headers carry them");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("--gateway {given:?}: give the gateway's address without ?query or #fragment; {hint}");
        }
        let mut base = url.to_string();
        while base.ends_with('/') {
            base.pop();
        }
        if let Some(prefix) = base.strip_suffix("/mcp") {
            // The user gave the gateway's `/mcp` root; servers live under it.
            base = prefix.to_string();
        }
        Ok(Gateway { base })
    }

    /// The URL a client uses for upstream `name`.
    pub fn url_for(&self, name: &str) -> String {
        format!("{}/mcp/{name}", self.base)
    }

    /// `url` already goes to this gateway.
    fn serves(&self, url: &str) -> bool {
        url.starts_with(&format!("{}/mcp/", self.base))
    }

    /// The `--listen` for `mcpwatch gateway`, when the URL names a literal address.
    pub fn listen(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.base).ok()?;
        if url.scheme() != "http" || url.path() != "/" {
            return None;
        }
        let host = url.host_str()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, url.port_or_known_default()?).to_string())
    }
}

/// One server routed through a gateway, and what its URL was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The config file, symlinks resolved.
    pub file: String,
    /// The server map, as `edit::Server::section` names it.
    pub section: String,
    pub server: String,
    /// The key that held the URL: `url` or `serverUrl`.
    pub key: String,
    /// What watch wrote.
    pub gateway_url: String,
    /// The URL it replaced, for the gateway's config.
    pub upstream: String,
    /// That value's exact JSON text, which unwatch writes back.
    pub original: String,
}

impl Route {
    fn same_place(&self, other: &Route) -> bool {
        self.file == other.file && self.section == other.section && self.server == other.server
    }
}

#[derive(Serialize, Deserialize, Default)]
struct RouteFile {
    version: u32,
    routes: Vec<Route>,
}

/// The records of servers routed through a gateway, in `<data dir>/clients/routes.json`.
pub struct Routes {
    path: PathBuf,
    routes: Vec<Route>,
}

impl Routes {
    /// Reads the records; none yet is an empty set, an unreadable file an error.
    pub fn load(data_dir: &Path) -> anyhow::Result<Routes> {
        let path = data_dir.join("clients").join("routes.json");
        let routes = match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
            Ok(m) if m.len() > MAX_BYTES => bail!(
                "{} is {} bytes, more than the {MAX_BYTES} it can be; move it away",
                path.display(),
                m.len()
            ),
            Ok(_) => {
                let bytes =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                let file: RouteFile = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is not a route record ({e}); move it away to start afresh (unwatch then cannot restore the URLs it held)",
                        path.display()
                    )
                })?;
                if file.version != 1 {
                    bail!(
                        "{} has version {}, which this mcpwatch does not know",
                        path.display(),
                        file.version
                    );
                }
                file.routes
            }
        };
        Ok(Routes { path, routes })
    }

    /// The record of a server, when it is still routed as recorded.
    fn current(&self, file: &str, server: &Server<'_>, url: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.file == file
                && r.section == server.section
                && r.server == server.name
                && r.gateway_url == url
        })
    }

    /// Another record under the same upstream name with a different URL.
    fn conflict(&self, route: &Route) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.server == route.server && r.upstream != route.upstream && !r.same_place(route)
        })
    }

    /// Adds records, replacing older ones for the same servers, and saves.
    pub fn add(&mut self, new: &[Route]) -> anyhow::Result<()> {
        self.routes.retain(|r| !new.iter().any(|n| n.same_place(r)));
        self.routes.extend_from_slice(new);
        if self.routes.len() > MAX_ROUTES {
            bail!(
                "{} would hold more than {MAX_ROUTES} routes; unwatch servers you no longer use",
                self.path.display()
            );
        }
        self.save()
    }

    /// Drops the records of these servers and saves.
    pub fn remove(&mut self, done: &[Route]) -> anyhow::Result<()> {
        let before = self.routes.len();
        self.routes
            .retain(|r| !done.iter().any(|d| d.same_place(r)));
        if self.routes.len() == before {
            return Ok(());
        }
        self.save()
    }

    /// Writes a temporary file beside the record, readable by the owner only, and renames it.
    fn save(&self) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let body = serde_json::to_vec_pretty(&RouteFile {
            version: 1,
            routes: self.routes.clone(),
        })?;
        let tmp = dir.join(format!(".routes.json.{}.tmp", std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = opts.open(&tmp).and_then(|mut f| {
            f.write_all(&body)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &self.path)) {
            let _ = fs::remove_file(&tmp);
            bail!(
                "cannot write {}: {e}; nothing was changed",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// The member holding an HTTP server's URL.
fn url_member(node: &Node) -> Option<(&'static str, &Node)> {
    ["url", "serverUrl"]
        .into_iter()
        .find_map(|k| node.get(k).map(|v| (k, v)))
}

/// A name the gateway accepts as an upstream (it becomes `/mcp/{name}`).
fn upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The edit that sends `server` to the gateway, and the record that undoes it.
pub fn watch(
    text: &str,
    file: &str,
    server: &Server<'_>,
    gateway: Option<&Gateway>,
    routes: &Routes,
    planned: &[Route],
) -> Result<(Edit, Route), Skip> {
    if server.node.get("type").and_then(Node::as_str) == Some("sse") {
        return Err(Skip::Sse);
    }
    let Some(gateway) = gateway else {
        return Err(Skip::NoGateway);
    };
    let (key, value) = url_member(server.node).ok_or(Skip::BadUrl)?;
    let url = value.as_str().ok_or(Skip::BadUrl)?;
    if routes.current(file, server, url).is_some() || gateway.serves(url) {
        return Err(Skip::AlreadyWatched);
    }
    if !matches!(
        reqwest::Url::parse(url)
            .map(|u| u.scheme().to_string())
            .as_deref(),
        Ok("http" | "https")
    ) {
        return Err(Skip::BadUrl);
    }
    if !upstream_name(&server.name) {
        return Err(Skip::UpstreamName);
    }
    let gateway_url = gateway.url_for(&server.name);
    let route = Route {
        file: file.to_string(),
        section: server.section.clone(),
        server: server.name.clone(),
        key: key.to_string(),
        gateway_url: gateway_url.clone(),
        upstream: url.to_string(),
        original: text[value.span.clone()].to_string(),
    };
    let clash = planned
        .iter()
        .find(|r| r.server == route.server && r.upstream != route.upstream)
        .or_else(|| routes.conflict(&route));
    if let Some(other) = clash {
        return Err(Skip::UpstreamTaken(other.upstream.clone()));
    }
    Ok((
        Edit {
            range: value.span.clone(),
            text: literal(&gateway_url),
        },
        route,
    ))
}

/// The edit that gives `server` back the URL it had, and the record that is then done.
pub fn unwatch(file: &str, server: &Server<'_>, routes: &Routes) -> Result<(Edit, Route), Skip> {
    let Some((_, value)) = url_member(server.node) else {
        return Err(Skip::NotWatched);
    };
    let url = value.as_str().ok_or(Skip::NotWatched)?;
    let route = routes.current(file, server, url).ok_or(Skip::NotWatched)?;
    Ok((
        Edit {
            range: value.span.clone(),
            text: route.original.clone(),
        },
        route.clone(),
    ))
}

/// Whether `server` goes through a gateway as recorded.
pub fn routed(file: &str, server: &Server<'_>, routes: &Routes) -> bool {
    server.transport == Transport::Http
        && url_member(server.node)
            .and_then(|(_, v)| v.as_str())
            .is_some_and(|url| routes.current(file, server, url).is_some())
}

/// What the gateway needs to serve the routed servers: its config and the equivalent command.
pub fn instructions(gateway: &Gateway, routes: &[Route]) -> String {
    let mut seen: Vec<&Route> = Vec::new();
    for r in routes {
        if !seen.iter().any(|s| s.server == r.server) {
            seen.push(r);
        }
    }
    let mut out = String::from(
        "the gateway must serve these upstreams; put them in its config file:\n    [gateway.upstreams]\n",
    );
    for r in &seen {
        // Names are plain (`upstream_name`), and a JSON string is a valid TOML basic string.
        out.push_str(&format!("    {} = {}\n", r.server, literal(&r.upstream)));
    }
    out.push_str("  or start it with: mcpwatch gateway");
    if let Some(listen) = gateway.listen() {
        out.push_str(&format!(" --listen {listen}"));
    }
    for r in &seen {
        out.push_str(&format!(
            " --upstream '{}={}'",
            r.server,
            r.upstream.replace('\'', "'\\''")
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::Gateway;

    #[test]
    fn gateway_addresses_become_client_urls() {
        let url = |s: &str| Gateway::parse(s).map(|g| g.url_for("x"));
        assert_eq!(
            url("127.0.0.1:7880").unwrap(),
            "http://127.0.0.1:7880/mcp/x"
        );
        assert_eq!(url("0.0.0.0:7880").unwrap(), "http://127.0.0.1:7880/mcp/x");
        assert_eq!(url("[::]:7880").unwrap(), "http://[::1]:7880/mcp/x");
        assert_eq!(
            url("localhost:7880").unwrap(),
            "http://localhost:7880/mcp/x"
        );
        assert_eq!(
            url("http://gw.internal:7880/").unwrap(),
            "http://gw.internal:7880/mcp/x"
        );
        assert_eq!(
            url("https://gw.example/mcp").unwrap(),
            "https://gw.example/mcp/x"
        );
        assert_eq!(
            url("https://gw.example/team/").unwrap(),
            "https://gw.example/team/mcp/x"
        );
        for bad in [
            "ftp://gw:21",
            "http://",
            "http://u:p@gw:1",
            "http://gw:1/?a=b",
            "http://gw:99999",
        ] {
            assert!(url(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            Gateway::parse("0.0.0.0:7880").unwrap().listen().as_deref(),
            Some("127.0.0.1:7880")
        );
        assert_eq!(
            Gateway::parse("http://gw.internal:7880").unwrap().listen(),
            None
        );
    }
}
