//! The socket uplink's I/O: every host socket it holds and every registration of
//! them on the poll.

pub mod token;
