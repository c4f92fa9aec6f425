//! SQL text, read at the byte level (no UTF-8 assumption, no full parse): recognizing the
//! statements the proxy must treat specially.

pub mod kill;
