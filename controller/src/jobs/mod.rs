//! Background jobs of the controller.

pub mod history;
