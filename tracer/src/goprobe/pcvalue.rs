//! Go's pc-value tables: the varint-delta encoding behind pcfile, pcln, pcsp and pcdata.
//!
//! Encoding from runtime/symtab.go (`step`, `readvarint`) and cmd/internal/obj/pcln.go (the
//! writer): a table is a run of (value delta, pc delta) pairs. The value delta is a zig-zag
//! uvarint (`-(d & 1) ^ (d >> 1)`), the pc delta a uvarint times the instruction quantum (1 on
//! amd64). The value starts at -1 and the pc at the function's entry; after a pair, the new
//! value holds from the previous pc up to (not including) the new pc. A value delta of 0 ends
//! the table, except in the first pair (a function whose first value is -1).

/// Go's `readvarint`: little-endian base-128, at most 5 bytes for a uint32. `None` when
/// truncated or longer than 5 bytes.
pub fn read_uvarint32(data: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &byte) in data.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// encoding/binary's `Uvarint` for lengths in .go.buildinfo: at most 10 bytes.
pub fn read_uvarint64(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// One run of a pc-value table: `value` holds for pcs in `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcRange {
    pub start: u64,
    pub end: u64,
    pub value: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pc-value table is truncated or malformed at byte {at}")]
pub struct PcValueError {
    pub at: usize,
}

/// The runs of one table, starting at a function's entry.
pub struct PcValueIter<'a> {
    data: &'a [u8],
    pos: usize,
    pc: u64,
    value: i32,
    first: bool,
    quantum: u64,
    done: bool,
}

impl<'a> PcValueIter<'a> {
    /// `data` starts at the table (pctab + the function's offset); `quantum` is pcHeader.minLC.
    pub fn new(data: &'a [u8], entry: u64, quantum: u8) -> Self {
        Self {
            data,
            pos: 0,
            pc: entry,
            value: -1,
            first: true,
            quantum: u64::from(quantum.max(1)),
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<PcRange>, PcValueError> {
        let err = PcValueError { at: self.pos };
        let rest = self.data.get(self.pos..).ok_or(err)?;
        let (value_delta, used) = read_uvarint32(rest).ok_or(err)?;
        if value_delta == 0 && !self.first {
            return Ok(None);
        }
        self.first = false;
        self.pos += used;
        // Zig-zag: runtime/symtab.go `int32(-(uvdelta & 1) ^ (uvdelta >> 1))`.
        let delta = (value_delta >> 1) as i32 ^ -((value_delta & 1) as i32);
        let rest = self.data.get(self.pos..).ok_or(err)?;
        let (pc_delta, used) = read_uvarint32(rest).ok_or(err)?;
        self.pos += used;
        let start = self.pc;
        self.value = self.value.wrapping_add(delta);
        self.pc = self
            .pc
            .checked_add(u64::from(pc_delta) * self.quantum)
            .ok_or(err)?;
        Ok(Some(PcRange {
            start,
            end: self.pc,
            value: self.value,
        }))
    }
}

impl Iterator for PcValueIter<'_> {
    type Item = Result<PcRange, PcValueError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(range)) => Some(Ok(range)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

/// The table's value at `pc` (runtime/symtab.go `pcvalue`), `None` when `pc` is past the
/// table's end (or before `entry`).
pub fn value_at(
    data: &[u8],
    entry: u64,
    quantum: u8,
    pc: u64,
) -> Result<Option<i32>, PcValueError> {
    if pc < entry {
        return Ok(None);
    }
    for range in PcValueIter::new(data, entry, quantum) {
        let range = range?;
        if pc < range.end {
            return Ok(Some(range.value));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Encodes a table the way cmd/internal/obj/pcln.go does, from (value, pc delta) runs.
    fn encode(runs: &[(i32, u32)]) -> Vec<u8> {
        fn uvarint(out: &mut Vec<u8>, mut v: u32) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        let mut out = Vec::new();
        let mut value = -1i32;
        for &(new_value, pc_delta) in runs {
            let delta = new_value - value;
            uvarint(&mut out, ((delta << 1) ^ (delta >> 31)) as u32);
            uvarint(&mut out, pc_delta);
            value = new_value;
        }
        out.push(0);
        out
    }

    #[test]
    fn uvarints() {
        assert_eq!(read_uvarint32(&[0x05]), Some((5, 1)));
        assert_eq!(read_uvarint32(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(
            read_uvarint32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX, 5))
        );
        assert_eq!(read_uvarint32(&[0x80]), None, "truncated");
        assert_eq!(read_uvarint32(&[0x80; 6]), None, "too long for a uint32");
        assert_eq!(read_uvarint32(&[]), None);
        assert_eq!(read_uvarint64(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(read_uvarint64(&[0x80; 11]), None);
    }

    #[test]
    fn decodes_runs_with_negative_and_large_deltas() {
        // Lines 10, 12, 9 (a negative delta), then 700 (a multi-byte delta) over 300 bytes.
        let table = encode(&[(10, 4), (12, 200), (9, 1), (700, 95)]);
        let runs: Vec<_> = PcValueIter::new(&table, 0x1000, 1)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            runs,
            vec![
                PcRange {
                    start: 0x1000,
                    end: 0x1004,
                    value: 10
                },
                PcRange {
                    start: 0x1004,
                    end: 0x10cc,
                    value: 12
                },
                PcRange {
                    start: 0x10cc,
                    end: 0x10cd,
                    value: 9
                },
                PcRange {
                    start: 0x10cd,
                    end: 0x112c,
                    value: 700
                },
            ]
        );
        assert_eq!(value_at(&table, 0x1000, 1, 0x1000), Ok(Some(10)));
        assert_eq!(value_at(&table, 0x1000, 1, 0x1003), Ok(Some(10)));
        assert_eq!(value_at(&table, 0x1000, 1, 0x1004), Ok(Some(12)));
        assert_eq!(value_at(&table, 0x1000, 1, 0x10cc), Ok(Some(9)));
        assert_eq!(value_at(&table, 0x1000, 1, 0x112b), Ok(Some(700)));
        assert_eq!(
            value_at(&table, 0x1000, 1, 0x112c),
            Ok(None),
            "past the end"
        );
        assert_eq!(value_at(&table, 0x1000, 1, 0xfff), Ok(None), "before entry");
    }

    #[test]
    fn a_first_value_of_minus_one_is_not_the_end() {
        // The first pair may carry a zero value delta (value stays -1), e.g. a pcdata table
        // whose first run is "no inlining"; only a later zero ends the table.
        let table = encode(&[(-1, 8), (0, 8)]);
        let runs: Vec<_> = PcValueIter::new(&table, 0, 1).map(Result::unwrap).collect();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].value, -1);
        assert_eq!(runs[1].value, 0);
    }

    #[test]
    fn quantum_scales_pc_deltas() {
        let table = encode(&[(1, 4)]);
        assert_eq!(value_at(&table, 0, 4, 15), Ok(Some(1)));
        assert_eq!(value_at(&table, 0, 4, 16), Ok(None));
    }

    #[test]
    fn truncated_tables_are_errors_not_panics() {
        let table = encode(&[(10, 4), (300, 2000)]);
        for cut in 0..table.len() - 1 {
            let result: Result<Vec<_>, _> = PcValueIter::new(&table[..cut], 0, 1).collect();
            assert!(result.is_err(), "cut at {cut} should fail");
        }
        // A continuation byte that never ends.
        assert!(value_at(&[0x82, 0x80, 0x80, 0x80, 0x80, 0x80], 0, 1, 0).is_err());
    }
}
