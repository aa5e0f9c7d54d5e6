//! Services that talk to other servers: the signed [`client`], the durable [`outbox`] sender,
//! [`inbound`] transactions, the [`follower`] side's gap fill (with its running [`fills`]),
//! [`catch_up`] pages served as a hub, [`relayed`] messages as stored here, and other servers'
//! users' [`device_lists`] as cached here, and the server [`acl`] in force.

pub mod acl;
pub mod catch_up;
pub mod client;
pub mod device_lists;
pub mod error;
pub mod fills;
pub mod follower;
pub mod inbound;
pub mod outbox;
pub mod relayed;
pub mod remote_errors;
