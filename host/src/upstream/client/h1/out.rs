//! A vectored write's cursor over a few byte slices (a request head, a
//! chunk's size line, its data): which are written, and how much of the
//! first one left, through partial writes.

use std::io::IoSlice;

/// What is left to write of a few byte slices.
pub(super) struct Out<'a> {
    parts: &'a [&'a [u8]],
    /// The first unwritten part, and how much of it is written.
    at: (usize, usize),
}

impl<'a> Out<'a> {
    pub(super) fn new(parts: &'a [&'a [u8]]) -> Out<'a> {
        let mut out = Out { parts, at: (0, 0) };
        out.advance(0);
        out
    }

    pub(super) fn done(&self) -> bool {
        self.at.0 >= self.parts.len()
    }

    pub(super) fn slices<'s>(&'s self, into: &mut [IoSlice<'s>; 3]) -> usize {
        let (first, offset) = self.at;
        let mut count = 0;
        for (i, part) in self.parts[first..].iter().take(3).enumerate() {
            let part = if i == 0 { &part[offset..] } else { part };
            into[count] = IoSlice::new(part);
            count += 1;
        }
        count
    }

    /// `n` more bytes written; empty parts skipped.
    pub(super) fn advance(&mut self, mut n: usize) {
        while let Some(part) = self.parts.get(self.at.0) {
            let left = part.len() - self.at.1;
            if n < left {
                self.at.1 += n;
                return;
            }
            n -= left;
            self.at = (self.at.0 + 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_walks_its_parts_through_partial_writes() {
        let parts: [&[u8]; 3] = [b"head", b"", b"body"];
        let mut out = Out::new(&parts);
        let mut written = Vec::new();
        for n in [3, 1, 2, 2] {
            let mut slices = [IoSlice::new(&[]); 3];
            let count = out.slices(&mut slices);
            let all: Vec<u8> = slices[..count]
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            written.extend_from_slice(&all[..n]);
            out.advance(n);
        }
        assert!(out.done());
        assert_eq!(written, b"headbody");
        assert!(Out::new(&[b"".as_slice()]).done());
    }
}
