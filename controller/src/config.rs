//! The controller's configuration: who the voters are, where the data lives, the timings.
//!
//! Library config, not CLI: the broker's clap arguments (`--controller-voters
//! id@host:port,...`, `--node-id`, `--broker-session-timeout-ms`) are turned into a
//! [`ControllerConfig`] by the broker; [`parse_voters`] gives the flag's meaning. With no
//! cluster flags, [`ControllerConfig::single_node`] is one voter: the same code, a quorum of one.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::ControllerError;

/// A controller voter: its Raft node id and the address of its controller endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Raft node id (the broker id of the node that runs it).
    pub id: u64,
    /// Where its controller listens.
    pub addr: SocketAddr,
}

/// Everything [`crate::Controller::start`] needs.
#[derive(Debug)]
pub struct ControllerConfig {
    /// This node's id; must be one of `voters`.
    pub node_id: u64,
    /// The voters, fixed at bootstrap: 1, 3 or 5 of them. Used only to initialise an empty
    /// log; afterwards the membership in the log rules.
    pub voters: Vec<Voter>,
    /// Where the Raft vote, log and snapshots live (a real disk).
    pub data_dir: PathBuf,
    /// An already bound listener for the controller endpoint (tests bind port 0 first);
    /// `None` binds this node's voter address.
    pub listener: Option<std::net::TcpListener>,
    /// Raft heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Raft election timeout, lower bound; an election starts after a random time between
    /// the bounds without a leader's heartbeat. Five heartbeats, so a loaded 2-core machine
    /// does not depose a live leader.
    pub election_timeout_min_ms: u64,
    /// Raft election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// A broker that does not heartbeat for this long is fenced (Kafka's
    /// `broker.session.timeout.ms`, 9 s).
    pub broker_session_timeout_ms: u64,
    /// How often the leader checks broker sessions: a tenth of the session, at most 250 ms, so
    /// a silent broker is fenced at most 250 ms after its session ends. A tick only compares
    /// one timestamp per broker.
    pub liveness_tick_ms: u64,
    /// Take a snapshot after this many log entries since the last one; the log before a
    /// snapshot is then purged but for `snapshot_log_keep_entries`.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a follower slightly behind catches up from the
    /// log rather than by a snapshot transfer.
    pub snapshot_log_keep_entries: u64,
    /// How long a `propose` or `broker_heartbeat` call may wait for a leader and its answer.
    pub request_timeout_ms: u64,
}

/// The session check period for a session of `session_ms`: a tenth of it, between 1 and
/// 250 ms (see [`ControllerConfig::liveness_tick_ms`]).
fn liveness_tick_ms(session_ms: u64) -> u64 {
    (session_ms / 10).clamp(1, 250)
}

/// Voter counts a controller quorum may have: odd, at most 5 (more adds latency, not safety).
pub const VOTER_COUNTS: [usize; 3] = [1, 3, 5];

impl ControllerConfig {
    /// A controller `node_id` among `voters`, data in `data_dir`, default timings.
    pub fn new(node_id: u64, voters: Vec<Voter>, data_dir: impl Into<PathBuf>) -> Self {
        let broker_session_timeout_ms = 9_000;
        ControllerConfig {
            node_id,
            voters,
            data_dir: data_dir.into(),
            listener: None,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            broker_session_timeout_ms,
            liveness_tick_ms: liveness_tick_ms(broker_session_timeout_ms),
            snapshot_every_entries: 1_000,
            snapshot_log_keep_entries: 100,
            request_timeout_ms: 10_000,
        }
    }

    /// One node, one voter (id 1) at `addr`: what `sluice serve` without cluster flags runs.
    pub fn single_node(data_dir: impl Into<PathBuf>, addr: SocketAddr) -> Self {
        ControllerConfig::new(1, vec![Voter { id: 1, addr }], data_dir)
    }

    /// Set the broker session timeout and the tick that checks it.
    pub fn with_broker_session_timeout_ms(mut self, session_ms: u64) -> Self {
        self.broker_session_timeout_ms = session_ms;
        self.liveness_tick_ms = liveness_tick_ms(session_ms);
        self
    }

    /// This node's own voter entry.
    pub fn own_voter(&self) -> Option<&Voter> {
        self.voters.iter().find(|voter| voter.id == self.node_id)
    }

    /// True when this node is not a voter: it joins the quorum as a Raft learner (a broker
    /// outside the quorum, which follows the metadata log without voting; Kafka's observer).
    pub fn is_learner(&self) -> bool {
        self.own_voter().is_none()
    }

    /// Check the voter list and the timings.
    pub fn validate(&self) -> Result<(), ControllerError> {
        let invalid = |reason: String| Err(ControllerError::InvalidConfig { reason });
        if !VOTER_COUNTS.contains(&self.voters.len()) {
            return invalid(format!(
                "{} voters given; a controller quorum has 1, 3 or 5",
                self.voters.len()
            ));
        }
        for (i, voter) in self.voters.iter().enumerate() {
            if self.voters[..i]
                .iter()
                .any(|other| other.id == voter.id || other.addr == voter.addr)
            {
                return invalid(format!("voter {}@{} is given twice", voter.id, voter.addr));
            }
        }
        if self.is_learner() && self.listener.is_none() {
            return invalid(format!(
                "node {} is not among the voters: it joins as a learner and needs a listener of its own",
                self.node_id
            ));
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_min_ms <= self.heartbeat_interval_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return invalid(
                "need 0 < heartbeat interval < election timeout min < election timeout max".into(),
            );
        }
        if self.broker_session_timeout_ms == 0 || self.liveness_tick_ms == 0 {
            return invalid("broker session timeout and liveness tick must be positive".into());
        }
        Ok(())
    }
}

/// Parse `--controller-voters`: `id@host:port,id@host:port,...` (1, 3 or 5 entries).
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, ControllerError> {
    let invalid = |reason: String| ControllerError::InvalidConfig { reason };
    let mut voters = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| invalid(format!("voter {entry:?} is not id@host:port")))?;
        let id = id
            .parse()
            .map_err(|_| invalid(format!("voter {entry:?}: {id:?} is not a node id")))?;
        let addr = addr
            .parse()
            .map_err(|_| invalid(format!("voter {entry:?}: {addr:?} is not host:port")))?;
        voters.push(Voter { id, addr });
    }
    if !VOTER_COUNTS.contains(&voters.len()) {
        return Err(invalid(format!(
            "{} voters given; a controller quorum has 1, 3 or 5",
            voters.len()
        )));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_validate() {
        let voters = parse_voters("1@127.0.0.1:9093, 2@127.0.0.1:9094,3@127.0.0.1:9095")
            .expect("three voters");
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[1].id, 2);
        let config = ControllerConfig::new(2, voters.clone(), "x");
        assert_eq!(config.validate(), Ok(()));
        assert!(ControllerConfig::new(4, voters, "x").validate().is_err());
        assert!(
            parse_voters("1@127.0.0.1:1,2@127.0.0.1:2").is_err(),
            "two is even"
        );
        assert!(parse_voters("1-127.0.0.1:1").is_err());
        assert!(parse_voters("x@127.0.0.1:1").is_err());
        let twice = parse_voters("1@127.0.0.1:1,1@127.0.0.1:2,3@127.0.0.1:3").expect("parses");
        assert!(ControllerConfig::new(1, twice, "x").validate().is_err());
    }
}
