//! Channel rendering and delivery against local receivers.
