//! SQL text, read at the byte level (no UTF-8 assumption, no full parse): the lexer, the
//! statement classifier that says where a statement may run and why, and recognizing the
//! statements the proxy must treat specially (KILL).

pub mod classify;
pub mod digest;
pub mod effects;
pub mod kill;
pub mod lexer;
mod memo;
pub mod tables;

pub use classify::{
    analyze, analyze_in, analyze_prefix, classify, Analysis, Class, Consistency, Source, Target,
};
pub use effects::Effects;
pub use lexer::Dialect;
