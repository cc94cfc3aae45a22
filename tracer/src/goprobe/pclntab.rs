//! `.gopclntab`: Go's function table, names and pc → file:line tables, which stripping keeps.
//!
//! Layouts (Go 1.20 and later, magic 0xfffffff1; unchanged through 1.27):
//! - runtime/symtab.go `pcHeader`: magic u32, two pad bytes, minLC (instruction quantum), ptrSize,
//!   then pointer-sized nfunc, nfiles, textStart (zero since Go 1.26: "no longer stored as it
//!   requires a relocation"; moduledata.text holds it, see moduledata.rs), and the offsets of
//!   funcnametab, cutab, filetab, pctab and pclntable, all from the header's start.
//! - runtime/symtab.go `functab`: nfunc+1 pairs of u32 (entryoff from the text start, funcoff from
//!   pclntable); the last pair's entryoff is the end of the last function.
//! - runtime/runtime2.go `_func`: entryOff u32, nameOff i32, args i32, deferreturn u32, pcsp u32,
//!   pcfile u32, pcln u32, npcdata u32, cuOffset u32, startLine i32, funcID u8, flag u8, pad u8,
//!   nfuncdata u8 (44 bytes), then npcdata u32 pcdata offsets (into pctab) and nfuncdata u32
//!   funcdata offsets (from moduledata.gofunc).
//! - A pcfile value indexes the function's compilation unit in cutab (u32 offsets into filetab,
//!   NUL-terminated paths); names are NUL-terminated in funcnametab. cmd/link/internal/ld/pcln.go
//!   writes all of it.

use super::pcvalue::{self, PcValueError};

/// Go 1.20 and later (runtime/symtab.go `go120magic`).
pub const MAGIC_GO120: u32 = 0xffff_fff1;
/// Older magics, refused with the Go releases they belong to.
const OLD_MAGICS: &[(u32, &str)] = &[
    (0xffff_fff0, "Go 1.18-1.19"),
    (0xffff_fffa, "Go 1.16-1.17"),
    (0xffff_fffb, "Go 1.2-1.15"),
];
const PTR_SIZE: usize = 8;
const HEADER_SIZE: usize = 8 + 8 * PTR_SIZE;
const FUNCTAB_ENTRY_SIZE: usize = 8;
const FUNC_STRUCT_SIZE: usize = 44;
/// internal/abi/symtab.go.
pub const PCDATA_INL_TREE_INDEX: u32 = 2;
pub const FUNCDATA_INL_TREE: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PclntabError {
    #[error("unknown pclntab magic {0:#010x}")]
    UnknownMagic(u32),
    #[error("pclntab magic {magic:#010x} is the layout of {release}, older than Go 1.20")]
    OldMagic { magic: u32, release: &'static str },
    #[error("pclntab header is not for 64-bit x86 (quantum {quantum}, pointer size {ptr_size})")]
    NotAmd64 { quantum: u8, ptr_size: u8 },
    #[error("pclntab is corrupt: {0}")]
    Corrupt(String),
    #[error("pclntab is corrupt: {0}")]
    PcValue(#[from] PcValueError),
}

fn corrupt(what: impl Into<String>) -> PclntabError {
    PclntabError::Corrupt(what.into())
}

/// runtime/symtab.go `pcHeader`, with its offsets as usize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcHeader {
    pub quantum: u8,
    pub nfunc: usize,
    pub nfiles: usize,
    /// Zero from Go 1.26 on.
    pub text_start: u64,
    pub funcname_offset: usize,
    pub cu_offset: usize,
    pub filetab_offset: usize,
    pub pctab_offset: usize,
    pub pcln_offset: usize,
}

/// A function of the binary: `entry..end` are link-time virtual addresses (add the load bias
/// of a PIE to compare with a running process's PCs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub entry: u64,
    pub end: u64,
    /// Index in the function table, for the pc tables.
    pub index: usize,
}

/// One `_func` record's fields that symbolization uses.
#[derive(Debug, Clone, Copy)]
struct FuncRecord {
    entry: u64,
    /// Offset of the `_func` in `data`.
    at: usize,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
}

/// A parsed `.gopclntab`, owning a copy of its bytes.
#[derive(Debug, Clone)]
pub struct Pclntab {
    data: Vec<u8>,
    header: PcHeader,
    /// The text start that function entry offsets are relative to (moduledata.text).
    text: u64,
}

/// Little-endian integers at a byte offset (`None` past the end); h2mem reads with them too.
pub(super) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

pub(super) fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn c_string(data: &[u8], at: usize) -> Option<&[u8]> {
    let rest = data.get(at..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..len])
}

impl PcHeader {
    pub fn parse(data: &[u8]) -> Result<Self, PclntabError> {
        let magic = u32_at(data, 0).ok_or_else(|| corrupt("shorter than its magic"))?;
        if magic != MAGIC_GO120 {
            if let Some(&(_, release)) = OLD_MAGICS.iter().find(|(m, _)| *m == magic) {
                return Err(PclntabError::OldMagic { magic, release });
            }
            return Err(PclntabError::UnknownMagic(magic));
        }
        if data.len() < HEADER_SIZE {
            return Err(corrupt("header truncated"));
        }
        let (quantum, ptr_size) = (data[6], data[7]);
        if data[4] != 0 || data[5] != 0 || quantum != 1 || usize::from(ptr_size) != PTR_SIZE {
            return Err(PclntabError::NotAmd64 { quantum, ptr_size });
        }
        let word = |i: usize| -> Result<usize, PclntabError> {
            let value = u64_at(data, 8 + i * PTR_SIZE).ok_or_else(|| corrupt("header"))?;
            usize::try_from(value).map_err(|_| corrupt("header field out of range"))
        };
        let header = Self {
            quantum,
            nfunc: word(0)?,
            nfiles: word(1)?,
            text_start: u64_at(data, 8 + 2 * PTR_SIZE).unwrap_or_default(),
            funcname_offset: word(3)?,
            cu_offset: word(4)?,
            filetab_offset: word(5)?,
            pctab_offset: word(6)?,
            pcln_offset: word(7)?,
        };
        for (name, offset) in [
            ("funcnametab", header.funcname_offset),
            ("cutab", header.cu_offset),
            ("filetab", header.filetab_offset),
            ("pctab", header.pctab_offset),
            ("pclntable", header.pcln_offset),
        ] {
            if offset < HEADER_SIZE || offset > data.len() {
                return Err(corrupt(format!(
                    "{name} offset {offset:#x} outside the {:#x}-byte table",
                    data.len()
                )));
            }
        }
        let functab_bytes = header
            .nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(FUNCTAB_ENTRY_SIZE))
            .ok_or_else(|| corrupt("function count"))?;
        if header.nfunc == 0
            || header
                .pcln_offset
                .checked_add(functab_bytes)
                .is_none_or(|end| end > data.len())
        {
            return Err(corrupt(format!(
                "function table of {} functions does not fit",
                header.nfunc
            )));
        }
        Ok(header)
    }
}

impl Pclntab {
    /// Parses the table and checks the function table is sorted (lookups binary-search it).
    /// `text` is the text start: pcHeader.textStart before Go 1.26, moduledata.text always.
    pub fn parse(data: Vec<u8>, text: u64) -> Result<Self, PclntabError> {
        let header = PcHeader::parse(&data)?;
        let table = Self { data, header, text };
        let mut previous = 0u32;
        for i in 0..=header.nfunc {
            let entry_off = table.functab(i)?.0;
            if entry_off < previous {
                return Err(corrupt(format!("function table unsorted at entry {i}")));
            }
            previous = entry_off;
        }
        Ok(table)
    }

    pub fn header(&self) -> &PcHeader {
        &self.header
    }

    pub fn text_start(&self) -> u64 {
        self.text
    }

    pub fn function_count(&self) -> usize {
        self.header.nfunc
    }

    /// The end of the last function (moduledata.etext for a single-text-section binary).
    pub fn text_end(&self) -> u64 {
        self.functab(self.header.nfunc)
            .map(|(entry_off, _)| self.text + u64::from(entry_off))
            .unwrap_or(self.text)
    }

    fn functab(&self, i: usize) -> Result<(u32, u32), PclntabError> {
        let at = self.header.pcln_offset + i * FUNCTAB_ENTRY_SIZE;
        match (u32_at(&self.data, at), u32_at(&self.data, at + 4)) {
            (Some(entry_off), Some(func_off)) => Ok((entry_off, func_off)),
            _ => Err(corrupt(format!("function table entry {i}"))),
        }
    }

    fn record(&self, i: usize) -> Result<FuncRecord, PclntabError> {
        let (entry_off, func_off) = self.functab(i)?;
        let at = self
            .header
            .pcln_offset
            .checked_add(func_off as usize)
            .filter(|at| at.saturating_add(FUNC_STRUCT_SIZE) <= self.data.len())
            .ok_or_else(|| corrupt(format!("function {i}'s record is outside the table")))?;
        let field = |n: usize| u32_at(&self.data, at + 4 * n).unwrap_or_default();
        if field(0) != entry_off {
            return Err(corrupt(format!(
                "function {i}: entry {:#x} in its record, {entry_off:#x} in the function table",
                field(0)
            )));
        }
        Ok(FuncRecord {
            entry: self.text + u64::from(entry_off),
            at,
            name_off: field(1),
            pcfile: field(5),
            pcln: field(6),
            npcdata: field(7),
            cu_offset: field(8),
            nfuncdata: self.data[at + FUNC_STRUCT_SIZE - 1],
        })
    }

    fn name_bytes(&self, name_off: u32) -> Result<&[u8], PclntabError> {
        self.header
            .funcname_offset
            .checked_add(name_off as usize)
            .and_then(|at| c_string(&self.data, at))
            .ok_or_else(|| corrupt(format!("function name at {name_off:#x}")))
    }

    /// A function name by its nameOff (also what inline-tree entries carry).
    pub fn name(&self, name_off: u32) -> Result<String, PclntabError> {
        Ok(String::from_utf8_lossy(self.name_bytes(name_off)?).into_owned())
    }

    /// The `i`th function in address order.
    pub fn function(&self, i: usize) -> Result<Function, PclntabError> {
        let record = self.record(i)?;
        let end = self.text + u64::from(self.functab(i + 1)?.0);
        Ok(Function {
            name: self.name(record.name_off)?,
            entry: record.entry,
            end,
            index: i,
        })
    }

    /// The function named exactly `name` (as runtime.FuncForPC names it: no `.abi0` suffix).
    /// A scan of the table; call it for the few functions the probes need, not per PC.
    pub fn find(&self, name: &str) -> Result<Option<Function>, PclntabError> {
        for i in 0..self.header.nfunc {
            let record = self.record(i)?;
            if self.name_bytes(record.name_off)? == name.as_bytes() {
                return self.function(i).map(Some);
            }
        }
        Ok(None)
    }

    /// Several functions by exact name in one pass; `None` for a name not in the table.
    pub fn find_many(&self, names: &[&str]) -> Result<Vec<Option<Function>>, PclntabError> {
        let mut found = vec![None; names.len()];
        for i in 0..self.header.nfunc {
            let record = self.record(i)?;
            let name = self.name_bytes(record.name_off)?;
            for (slot, wanted) in found.iter_mut().zip(names) {
                if slot.is_none() && name == wanted.as_bytes() {
                    *slot = Some(self.function(i)?);
                }
            }
        }
        Ok(found)
    }

    /// Every function whose name starts with one of `prefixes`, in one pass.
    pub fn with_prefix(&self, prefixes: &[&str]) -> Result<Vec<Function>, PclntabError> {
        let mut found = Vec::new();
        for i in 0..self.header.nfunc {
            let record = self.record(i)?;
            let name = self.name_bytes(record.name_off)?;
            if prefixes.iter().any(|p| name.starts_with(p.as_bytes())) {
                found.push(self.function(i)?);
            }
        }
        Ok(found)
    }

    /// Gives the table's bytes back, to parse them again against another text start.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The index of the function whose range holds `pc` (a link-time address).
    pub fn index_for_pc(&self, pc: u64) -> Option<usize> {
        let offset = u32::try_from(pc.checked_sub(self.text)?).ok()?;
        let (end, _) = self.functab(self.header.nfunc).ok()?;
        if offset >= end {
            return None;
        }
        // The table is sorted (checked in parse): the last entry at or below the offset.
        let (mut low, mut high) = (0usize, self.header.nfunc);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.functab(mid).ok()?.0 <= offset {
                low = mid;
            } else {
                high = mid;
            }
        }
        (self.functab(low).ok()?.0 <= offset).then_some(low)
    }

    pub fn function_for_pc(&self, pc: u64) -> Result<Option<Function>, PclntabError> {
        self.index_for_pc(pc).map(|i| self.function(i)).transpose()
    }

    fn pc_value(&self, record: &FuncRecord, table: u32, pc: u64) -> Result<i32, PclntabError> {
        if table == 0 {
            return Ok(-1);
        }
        let data = self
            .header
            .pctab_offset
            .checked_add(table as usize)
            .and_then(|at| self.data.get(at..))
            .ok_or_else(|| corrupt(format!("pc table offset {table:#x}")))?;
        Ok(pcvalue::value_at(data, record.entry, self.header.quantum, pc)?.unwrap_or(-1))
    }

    fn file_name(&self, record: &FuncRecord, file_index: i32) -> Result<String, PclntabError> {
        let index = u32::try_from(file_index).map_err(|_| corrupt("negative file index"))?;
        // Two u32s widened to usize: no overflow on a 64-bit host.
        let slot = self.header.cu_offset + 4 * (record.cu_offset as usize + index as usize);
        let file_off = u32_at(&self.data, slot).ok_or_else(|| corrupt("cutab entry"))?;
        if file_off == u32::MAX {
            return Ok("?".to_owned());
        }
        let name = self
            .header
            .filetab_offset
            .checked_add(file_off as usize)
            .and_then(|at| c_string(&self.data, at))
            .ok_or_else(|| corrupt(format!("file name at {file_off:#x}")))?;
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    /// The source file and line of the instruction at `pc` in function `index`: the innermost
    /// position when `pc` is in inlined code (runtime/symtab.go `funcline1`).
    pub fn file_line(&self, index: usize, pc: u64) -> Result<Option<(String, u32)>, PclntabError> {
        let record = self.record(index)?;
        let file = self.pc_value(&record, record.pcfile, pc)?;
        let line = self.pc_value(&record, record.pcln, pc)?;
        if file < 0 || line < 0 {
            return Ok(None);
        }
        Ok(Some((self.file_name(&record, file)?, line as u32)))
    }

    /// pcdata table `table`'s value at `pc` (-1 when absent), runtime/symtab.go `pcdatavalue`.
    pub fn pcdata_value(&self, index: usize, table: u32, pc: u64) -> Result<i32, PclntabError> {
        let record = self.record(index)?;
        if table >= record.npcdata {
            return Ok(-1);
        }
        let at = record.at + FUNC_STRUCT_SIZE + 4 * table as usize;
        let offset = u32_at(&self.data, at).ok_or_else(|| corrupt("pcdata offset"))?;
        self.pc_value(&record, offset, pc)
    }

    /// funcdata slot `slot` of function `index`: an offset from moduledata.gofunc, or `None`
    /// (runtime/symtab.go `funcdata`: `^uint32(0)` means absent).
    pub fn funcdata_offset(&self, index: usize, slot: u32) -> Result<Option<u32>, PclntabError> {
        let record = self.record(index)?;
        if slot >= u32::from(record.nfuncdata) {
            return Ok(None);
        }
        let at = record.at + FUNC_STRUCT_SIZE + 4 * (record.npcdata as usize + slot as usize);
        let offset = u32_at(&self.data, at).ok_or_else(|| corrupt("funcdata offset"))?;
        Ok((offset != u32::MAX).then_some(offset))
    }

    pub fn entry_of(&self, index: usize) -> Result<u64, PclntabError> {
        Ok(self.record(index)?.entry)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A tiny synthetic .gopclntab with the 1.20+ layout: two functions (`main.a` at text+0x0
    /// for 0x20 bytes, `main.b` at text+0x20 for 0x10 bytes), two files, pcfile/pcln tables.
    pub fn synthetic(text_start: u64) -> Vec<u8> {
        let mut funcnametab = Vec::new();
        let name_a = funcnametab.len() as u32;
        funcnametab.extend_from_slice(b"main.a\0");
        let name_b = funcnametab.len() as u32;
        funcnametab.extend_from_slice(b"main.b\0");
        let mut filetab = Vec::new();
        let file_x = filetab.len() as u32;
        filetab.extend_from_slice(b"/src/x.go\0");
        let file_y = filetab.len() as u32;
        filetab.extend_from_slice(b"y.go\0");
        // One CU: file 0 = x.go, file 1 = y.go.
        let cutab: Vec<u8> = [file_x, file_y]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        // pctab: offset 0 is unused by Go (0 means "no table"), so start with a zero byte.
        let mut pctab = vec![0u8];
        // main.a: file 0 for 0x20 bytes (value -1 -> 0: delta +1 = zigzag 2).
        let a_file = pctab.len() as u32;
        pctab.extend_from_slice(&[2, 0x20, 0]);
        // main.a: line 10 for 0x10 bytes, then line 12 for 0x10 (deltas +11 -> 22, +2 -> 4).
        let a_line = pctab.len() as u32;
        pctab.extend_from_slice(&[22, 0x10, 4, 0x10, 0]);
        // main.b: file 1 for 0x10 bytes (delta +2 -> 4), line 7 (delta +8 -> 16).
        let b_file = pctab.len() as u32;
        pctab.extend_from_slice(&[4, 0x10, 0]);
        let b_line = pctab.len() as u32;
        pctab.extend_from_slice(&[16, 0x10, 0]);

        let header_size = HEADER_SIZE;
        let funcname_offset = header_size;
        let cu_offset = funcname_offset + funcnametab.len();
        let filetab_offset = cu_offset + cutab.len();
        let pctab_offset = filetab_offset + filetab.len();
        let pcln_offset = pctab_offset + pctab.len();

        let nfunc = 2usize;
        let functab_size = (nfunc + 1) * FUNCTAB_ENTRY_SIZE;
        let func = |entry_off: u32, name: u32, pcfile: u32, pcln: u32| {
            let mut f = Vec::new();
            for v in [entry_off, name, 0, 0, 0, pcfile, pcln, 0, 0, 1] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend_from_slice(&[0, 0, 0, 0]);
            f
        };
        let func_a = func(0, name_a, a_file, a_line);
        let func_b = func(0x20, name_b, b_file, b_line);
        let func_a_off = functab_size as u32;
        let func_b_off = func_a_off + func_a.len() as u32;

        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC_GO120.to_le_bytes());
        out.extend_from_slice(&[0, 0, 1, 8]);
        for v in [
            nfunc as u64,
            2,
            text_start,
            funcname_offset as u64,
            cu_offset as u64,
            filetab_offset as u64,
            pctab_offset as u64,
            pcln_offset as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(funcnametab);
        out.extend(cutab);
        out.extend(filetab);
        out.extend(pctab);
        for (entry, off) in [(0u32, func_a_off), (0x20, func_b_off), (0x30, 0)] {
            out.extend_from_slice(&entry.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend(func_a);
        out.extend(func_b);
        out
    }

    #[test]
    fn reads_functions_names_and_lines() {
        let table = Pclntab::parse(synthetic(0x401000), 0x401000).unwrap();
        assert_eq!(table.function_count(), 2);
        let a = table.find("main.a").unwrap().unwrap();
        assert_eq!((a.entry, a.end), (0x401000, 0x401020));
        let b = table.find("main.b").unwrap().unwrap();
        assert_eq!((b.entry, b.end), (0x401020, 0x401030));
        assert_eq!(table.find("main.c").unwrap(), None);
        assert_eq!(table.index_for_pc(0x401000), Some(0));
        assert_eq!(table.index_for_pc(0x40101f), Some(0));
        assert_eq!(table.index_for_pc(0x401020), Some(1));
        assert_eq!(table.index_for_pc(0x401030), None, "past etext");
        assert_eq!(table.index_for_pc(0x400fff), None, "before text");
        assert_eq!(
            table.file_line(0, 0x40100f).unwrap(),
            Some(("/src/x.go".into(), 10))
        );
        assert_eq!(
            table.file_line(0, 0x401010).unwrap(),
            Some(("/src/x.go".into(), 12))
        );
        assert_eq!(
            table.file_line(1, 0x401025).unwrap(),
            Some(("y.go".into(), 7))
        );
        assert_eq!(table.text_end(), 0x401030);
    }

    #[test]
    fn refuses_unknown_and_old_magics() {
        let mut data = synthetic(0x401000);
        data[..4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let err = Pclntab::parse(data.clone(), 0).unwrap_err();
        assert_eq!(err, PclntabError::UnknownMagic(0xdead_beef));
        assert_eq!(err.to_string(), "unknown pclntab magic 0xdeadbeef");
        data[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(
            Pclntab::parse(data.clone(), 0),
            Err(PclntabError::OldMagic {
                release: "Go 1.18-1.19",
                ..
            })
        ));
        data[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert!(matches!(
            Pclntab::parse(data, 0),
            Err(PclntabError::OldMagic { .. })
        ));
    }

    #[test]
    fn refuses_other_architectures() {
        let mut data = synthetic(0x401000);
        data[6] = 4; // arm64's quantum
        assert!(matches!(
            Pclntab::parse(data, 0),
            Err(PclntabError::NotAmd64 { quantum: 4, .. })
        ));
    }

    #[test]
    fn corrupt_tables_are_errors_not_panics() {
        let good = synthetic(0x401000);
        // Every truncation either fails to parse or fails on use; none panics.
        for cut in 0..good.len() {
            if let Ok(table) = Pclntab::parse(good[..cut].to_vec(), 0x401000) {
                for i in 0..table.function_count() {
                    let _ = table.function(i);
                    let _ = table.file_line(i, 0x401000);
                }
            }
        }
        // Every single-byte corruption of the whole table, likewise.
        for at in 0..good.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut data = good.clone();
                data[at] = value;
                if let Ok(table) = Pclntab::parse(data, 0x401000) {
                    for pc in [0x401000, 0x401010, 0x401025, 0x40102f] {
                        if let Some(i) = table.index_for_pc(pc) {
                            let _ = table.function(i);
                            let _ = table.file_line(i, pc);
                            let _ = table.pcdata_value(i, PCDATA_INL_TREE_INDEX, pc);
                            let _ = table.funcdata_offset(i, FUNCDATA_INL_TREE);
                        }
                    }
                    let _ = table.find("main.b");
                }
            }
        }
        // An unsorted function table is refused up front (lookups binary-search it).
        let mut data = good.clone();
        let header = PcHeader::parse(&data).unwrap();
        let second = header.pcln_offset + FUNCTAB_ENTRY_SIZE;
        data[second..second + 4].copy_from_slice(&0x40u32.to_le_bytes());
        assert!(matches!(
            Pclntab::parse(data, 0x401000),
            Err(PclntabError::Corrupt(_))
        ));
        // A function count that runs past the end.
        let mut data = good;
        data[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Pclntab::parse(data, 0x401000),
            Err(PclntabError::Corrupt(_))
        ));
    }
}
