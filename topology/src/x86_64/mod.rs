//! x86 specifics: the CPUID leaves of the own VMM, and reading them back as
//! Linux does.

pub mod cpuid;
mod decode;

#[cfg(test)]
mod tests;
