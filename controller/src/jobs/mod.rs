//! Background jobs of the controller.

pub mod adguard;
pub mod history;
pub mod wireguard_reset;
