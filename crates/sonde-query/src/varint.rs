//! LEB128 varints, the encoding of the mergeable partials that travel as `Binary` values
//! ([`crate::sketch`]'s buckets, [`crate::distinct`]'s sets).

/// Appends `v` as a LEB128 varint: seven bits a byte, the high bit set on all but the last.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads varints, and byte strings after their varint length, from the front of a buffer; a
/// truncated one (only a corrupt value has one) reads as `None`.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// The next varint.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next byte string (its length as a varint, then its bytes).
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let v = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(v)
    }
}
