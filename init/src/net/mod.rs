//! Networking logic without I/O: the DHCP client, the `ip=` parser, bridge addresses, the
//! nftables batch, and the resolver files. PID 1's `pid1::network` drives them over netlink
//! and sockets.

pub mod cmdline;
pub mod dhcp;
pub mod files;
pub mod ipam;
pub mod nft;
pub mod rtnl;
