use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
struct P;
#[async_trait]
impl ProxyHttp for P {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new_uds("/tmp/sgb/run/slots/bench.sock", false, String::new())?))
    }
    async fn upstream_request_filter(&self, _s: &mut Session, r: &mut RequestHeader, _c: &mut ()) -> Result<()> {
        r.insert_header("X-Slotgate-Auth", "x")?;
        Ok(())
    }
}
fn main() {
    let mut conf = pingora::server::configuration::ServerConf::default();
    conf.threads = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, P);
    svc.add_tcp("127.0.0.1:18003");
    server.add_service(svc);
    server.run_forever();
}
