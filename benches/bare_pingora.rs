//! The floor for `benches/load.sh`: a bare pingora HTTP/1 pass-through.
//!
//! A `ProxyHttp` with nothing but `upstream_peer` (one upstream, keep-alive to
//! it) and no downstream modules, built from this repository's lockfile, so its
//! pingora, tokio and compiler are Gatehouse's. It uses the system allocator,
//! as a plain pingora program does. Every Gatehouse row in the load bench is
//! printed as a ratio to this one.
//!
//!   bare_pingora --listen 127.0.0.1:18087 --upstream 127.0.0.1:18081 --threads 1 [--h2c]
//!
//! `--h2c` also takes cleartext HTTP/2 with prior knowledge (the floor of the
//! bench's HTTP/2 rows), as Gatehouse's `server.h2c` does.

use async_trait::async_trait;
use clap::Parser;
use pingora::modules::http::HttpModules;
use pingora::prelude::{HttpPeer, Opt};
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::Result;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18087")]
    listen: String,
    #[arg(long, default_value = "127.0.0.1:18081")]
    upstream: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long)]
    h2c: bool,
}

struct PassThrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    /// None, not even pingora's default disabled compression module.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, PassThrough { upstream: args.upstream });
    if let Some(app) = proxy.app_logic_mut() {
        let mut options = app.server_options.take().unwrap_or_default();
        options.h2c = args.h2c;
        app.server_options = Some(options);
    }
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
