//! What one connection has in flight: its budget of request bytes (`--max-request-bytes-in-flight`,
//! shared by its reader and its writer) and the charge of one dispatched request, which the
//! writer gives back once the response is written. Called by [`crate::net::connection`] and
//! [`crate::net::receive_buffer`].

use std::rc::Rc;

use glommio::sync::Semaphore;
use wire::protocol::Request;

use crate::net::limits::{BudgetClosed, ShardNet, SMALL_RESPONSE_BYTES};

/// Bytes one connection may have in flight: its receive buffer beyond the first one, plus the
/// charges of its requests not yet answered. Closed when the writer stops, which wakes a
/// reader waiting for room.
pub type ConnectionBudget = Rc<Semaphore>;

/// A new connection budget of `bytes`.
pub fn connection_budget(bytes: usize) -> ConnectionBudget {
    Rc::new(Semaphore::new(bytes as u64))
}

/// The most a request's response can hold: a fetch's `max_bytes` (its reads stop there),
/// [`SMALL_RESPONSE_BYTES`] for everything else.
pub fn response_bytes_max(request: &Request<'_>) -> usize {
    match request {
        Request::Fetch(fetch) => fetch.max_bytes as usize,
        Request::ReplicaFetch(fetch) => fetch.max_bytes as usize,
        _ => SMALL_RESPONSE_BYTES,
    }
}

/// The bytes a dispatched request holds of its connection's and its shard's budgets, given
/// back when dropped (after its response is written, or when the connection ends).
pub struct RequestCharge {
    bytes: usize,
    connection: ConnectionBudget,
    net: Rc<ShardNet>,
}

impl RequestCharge {
    /// A charge of nothing (error answers the connection writes before closing).
    pub fn none(connection: &ConnectionBudget, net: &Rc<ShardNet>) -> RequestCharge {
        RequestCharge {
            bytes: 0,
            connection: connection.clone(),
            net: net.clone(),
        }
    }

    /// Charges `wanted` bytes, waiting for room in the connection's budget, then in the
    /// shard's. The charge is clamped so it can always be granted once the connection's other
    /// requests are answered: to what the connection's receive buffer leaves of its budget
    /// (`connection_room`), and to the whole shard budget.
    pub async fn take(
        connection: &ConnectionBudget,
        net: &Rc<ShardNet>,
        wanted: usize,
        connection_room: usize,
    ) -> Result<RequestCharge, BudgetClosed> {
        let bytes = wanted.min(connection_room).min(net.request_charge_max());
        connection
            .acquire(bytes as u64)
            .await
            .map_err(|_| BudgetClosed)?;
        if let Err(closed) = net.take_request(bytes).await {
            connection.signal(bytes as u64);
            return Err(closed);
        }
        Ok(RequestCharge {
            bytes,
            connection: connection.clone(),
            net: net.clone(),
        })
    }
}

impl Drop for RequestCharge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.connection.signal(self.bytes as u64);
            self.net.give_request(self.bytes);
        }
    }
}
