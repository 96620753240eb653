//! Accept loops. Every shard accepts on the main port (SO_REUSEPORT: the kernel spreads
//! connections over the shards) and on its own port (advertised in metadata, so shard-aware
//! clients reach a partition's owner directly).

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::services::ShardServices;

/// Accepts until the shard shuts down; each connection runs as its own task.
pub async fn accept_loop(shard: Rc<ShardServices>, listener: TcpListener, name: &'static str) {
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
            Some(Ok(stream)) => {
                let shard = shard.clone();
                glommio::spawn_local(
                    async move { crate::net::connection::serve(shard, stream).await },
                )
                .detach();
            }
            Some(Err(error)) => {
                // Out of descriptors or a reset before accept: log, back off a little, go on.
                tracing::warn!(shard = shard.id, listener = name, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
