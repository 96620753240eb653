//! The network side of a shard: listeners ([`listener`]) and connections ([`connection`]). The
//! only module that touches sockets on the server side.

pub mod connection;
pub mod limits;
pub mod listener;
pub mod receive_buffer;
pub mod request_charge;
