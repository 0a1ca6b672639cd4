//! Fixed-layout little-endian reader and writer. Lengths are checked once, up front.
//!
//! Offsets only ever advance by field sizes whose sum is the layout constant (checked by the
//! round-trip tests), so index arithmetic here cannot overflow.
#![allow(clippy::arithmetic_side_effects)]

use crate::MessageError;

/// Writes fields into a buffer whose length is exactly the layout's length.
pub(crate) struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    pub(crate) fn bytes(&mut self, field: &[u8]) {
        // Layout constants guarantee the field fits; an overrun is a bug in this crate.
        let end = self.at + field.len();
        self.out[self.at..end].copy_from_slice(field);
        self.at = end;
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }

    /// Asserts (in debug builds) that the layout was filled exactly.
    pub(crate) fn finish(self) {
        debug_assert_eq!(
            self.at,
            self.out.len(),
            "layout constant and fields disagree"
        );
    }
}

/// Reads fields from input that was checked to have the exact layout length and tag.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Checks the length and tag; the reader starts right after the tag.
    pub(crate) fn new(input: &'a [u8], len: usize, tag: &[u8]) -> Result<Self, MessageError> {
        if input.len() != len {
            return Err(MessageError::WrongLength {
                expected: len,
                actual: input.len(),
            });
        }
        if !input.starts_with(tag) {
            return Err(MessageError::WrongTag);
        }
        Ok(Self {
            input,
            at: tag.len(),
        })
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let end = self.at + N;
        out.copy_from_slice(&self.input[self.at..end]);
        self.at = end;
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A byte that must be 0 or 1.
    pub(crate) fn flag(&mut self) -> Result<bool, MessageError> {
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(MessageError::InvalidFlag(other)),
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub(crate) fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
}
