//! Accept loops. Every shard accepts on the main port (SO_REUSEPORT: the kernel spreads
//! connections over the shards) and on its own port (advertised in metadata, so shard-aware
//! clients reach a partition's owner directly).
//!
//! Beyond `--max-connections` (per node) a new connection is accepted and closed at once,
//! without a word: the protocol has no message a server sends before it is asked, and reading
//! a request just to refuse it would spend a buffer per refused client. The client sees the
//! connection close (and retries with back-off); the refusals are counted
//! ([`crate::net::limits::NetStats::connections_refused`]) and logged one in 1024. Accepting
//! and closing, rather than not accepting, keeps the kernel's backlog from filling, so the
//! accept loop keeps going and a client arriving after a connection closes is served.

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::net::limits::ShardNet;
use crate::services::ShardServices;

/// Accepts until the shard shuts down; each connection runs as its own task.
pub async fn accept_loop(
    shard: Rc<ShardServices>,
    net: Rc<ShardNet>,
    listener: TcpListener,
    name: &'static str,
) {
    loop {
        let stop_shard = shard.clone();
        let stop = async move {
            stop_shard
                .changed
                .wait_until(|| stop_shard.shutting_down.get())
                .await;
            None
        };
        let accepted =
            futures_lite::future::or(async { Some(listener.accept().await) }, stop).await;
        match accepted {
            None => return,
            Some(Ok(stream)) => match net.admit() {
                Some(slot) => {
                    let (shard, net) = (shard.clone(), net.clone());
                    glommio::spawn_local(async move {
                        crate::net::connection::serve(shard, net, stream, slot).await
                    })
                    .detach();
                }
                None => drop(stream),
            },
            Some(Err(error)) => {
                // Out of descriptors or a reset before accept: log, back off a little, go on.
                tracing::warn!(shard = shard.id, listener = name, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
