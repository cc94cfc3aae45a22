//! PC → function, file:line, with inlined calls expanded, cached per PC.
//!
//! Inlining: `.gopclntab`'s function table only has the functions that were compiled on their
//! own; code inlined into them carries the inlined function's file:line in pcfile/pcln, and its
//! name in the function's inline tree (runtime/symtabinl.go): funcdata slot FUNCDATA_InlTree
//! (3) points, from moduledata.gofunc, at an array of `inlinedCall {funcID u8; _ [3]byte;
//! nameOff i32; parentPc i32; startLine i32}` (16 bytes), and pcdata table
//! PCDATA_InlTreeIndex (2) gives each PC's index into it (-1: not inlined). The parent frame is
//! found at `entry + parentPc`, whose pcln is the call site. This is what runtime.Caller and
//! runtime.FuncForPC report, so a leak's call site names the function a person wrote.

use std::collections::HashMap;
use std::sync::Arc;

use super::pclntab::{Pclntab, PclntabError, FUNCDATA_INL_TREE, PCDATA_INL_TREE_INDEX};

const INLINED_CALL_SIZE: usize = 16;
/// A bound on inline depth, so a corrupt tree cannot loop.
const MAX_INLINE_DEPTH: usize = 64;

/// One logical frame: a function, and where in its source the PC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Inlined into the next (outer) frame rather than compiled on its own.
    pub inlined: bool,
}

/// The bytes from moduledata.gofunc to the end of its section, where funcdata points.
#[derive(Debug, Clone)]
pub struct GoFuncData {
    pub address: u64,
    pub bytes: Vec<u8>,
}

/// What symbolization reads: the function table and, when found, the funcdata.
#[derive(Debug, Clone)]
pub struct SymbolTable {
    pub pclntab: Pclntab,
    pub gofunc: Option<GoFuncData>,
}

impl SymbolTable {
    /// The frames at `pc` (a link-time address of an instruction), innermost first: inlined
    /// calls, then the function that holds them. Empty when `pc` is in no Go function.
    pub fn frames_at(&self, pc: u64) -> Result<Vec<Frame>, PclntabError> {
        let Some(index) = self.pclntab.index_for_pc(pc) else {
            return Ok(Vec::new());
        };
        let entry = self.pclntab.entry_of(index)?;
        let tree = self.inline_tree(index)?;
        let mut frames = Vec::new();
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self
                .pclntab
                .file_line(index, at)?
                .unwrap_or_else(|| ("?".to_owned(), 0));
            let inline_index = match tree {
                Some(_) => self
                    .pclntab
                    .pcdata_value(index, PCDATA_INL_TREE_INDEX, at)?,
                None => -1,
            };
            let call = match (tree, usize::try_from(inline_index)) {
                (Some(tree), Ok(i)) => Some(inlined_call(tree, i)?),
                _ => None,
            };
            match call {
                Some((name_off, parent_pc)) => {
                    frames.push(Frame {
                        function: self.pclntab.name(name_off)?,
                        file,
                        line,
                        inlined: true,
                    });
                    at = entry
                        .checked_add_signed(i64::from(parent_pc))
                        .ok_or_else(|| PclntabError::Corrupt("inline parent pc".into()))?;
                }
                None => {
                    frames.push(Frame {
                        function: self.pclntab.function(index)?.name,
                        file,
                        line,
                        inlined: false,
                    });
                    return Ok(frames);
                }
            }
        }
        Err(PclntabError::Corrupt(format!(
            "inline tree deeper than {MAX_INLINE_DEPTH} at {pc:#x}"
        )))
    }

    fn inline_tree(&self, index: usize) -> Result<Option<&[u8]>, PclntabError> {
        let (Some(gofunc), Some(offset)) = (
            &self.gofunc,
            self.pclntab.funcdata_offset(index, FUNCDATA_INL_TREE)?,
        ) else {
            return Ok(None);
        };
        gofunc
            .bytes
            .get(offset as usize..)
            .map(Some)
            .ok_or_else(|| PclntabError::Corrupt(format!("inline tree at gofunc+{offset:#x}")))
    }
}

/// (nameOff, parentPc) of inline tree entry `i`.
fn inlined_call(tree: &[u8], i: usize) -> Result<(u32, i32), PclntabError> {
    let at = i
        .checked_mul(INLINED_CALL_SIZE)
        .filter(|at| at + INLINED_CALL_SIZE <= tree.len())
        .ok_or_else(|| PclntabError::Corrupt(format!("inline tree entry {i}")))?;
    let word = |o: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&tree[at + o..at + o + 4]);
        bytes
    };
    Ok((u32::from_le_bytes(word(4)), i32::from_le_bytes(word(8))))
}

/// Per-process symbolization with a cache per PC: a relay's stacks repeat the same few hundred
/// return addresses, so each is decoded once.
pub struct Symbolizer {
    table: Arc<SymbolTable>,
    /// Runtime address minus link-time address: 0 for non-PIE, the load base for a PIE.
    load_bias: u64,
    cache: HashMap<u64, Arc<[Frame]>>,
}

impl Symbolizer {
    pub fn new(table: Arc<SymbolTable>, load_bias: u64) -> Self {
        Self {
            table,
            load_bias,
            cache: HashMap::new(),
        }
    }

    /// The frames of one return address from a stack (innermost inlined frame first). Like
    /// Go's traceback, it looks at `pc - 1`, the call instruction, so a call that is the last
    /// instruction of a function or of an inlined body is named right.
    pub fn return_address(&mut self, pc: u64) -> Arc<[Frame]> {
        self.at(pc.saturating_sub(1))
    }

    /// The frames of the instruction at runtime address `pc` (e.g. a uprobe's own address).
    /// Empty for a PC outside Go's functions or a table that fails to decode there.
    pub fn at(&mut self, pc: u64) -> Arc<[Frame]> {
        if let Some(frames) = self.cache.get(&pc) {
            return Arc::clone(frames);
        }
        let frames: Arc<[Frame]> = pc
            .checked_sub(self.load_bias)
            .and_then(|link_pc| self.table.frames_at(link_pc).ok())
            .unwrap_or_default()
            .into();
        self.cache.insert(pc, Arc::clone(&frames));
        frames
    }

    /// A whole stack of return addresses, innermost first, inlined frames expanded.
    pub fn stack(&mut self, return_addresses: &[u64]) -> Vec<Frame> {
        return_addresses
            .iter()
            .flat_map(|&pc| self.return_address(pc).to_vec())
            .collect()
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::goprobe::pclntab::tests::synthetic;

    fn symbolizer(bias: u64) -> Symbolizer {
        let table = SymbolTable {
            pclntab: Pclntab::parse(synthetic(0x401000), 0x401000).unwrap(),
            gofunc: None,
        };
        Symbolizer::new(Arc::new(table), bias)
    }

    #[test]
    fn symbolizes_and_caches_per_pc() {
        let mut symbolizer = symbolizer(0);
        let frames = symbolizer.at(0x401011);
        assert_eq!(
            &*frames,
            &[Frame {
                function: "main.a".into(),
                file: "/src/x.go".into(),
                line: 12,
                inlined: false
            }]
        );
        // A return address right after a call that ends main.a's first line is line 10's.
        assert_eq!(symbolizer.return_address(0x401010)[0].line, 10);
        assert_eq!(symbolizer.at(0x401011), frames);
        assert_eq!(symbolizer.cached(), 2);
        assert!(symbolizer.at(0x500000).is_empty(), "outside Go's text");
        let stack = symbolizer.stack(&[0x401026, 0x401011]);
        assert_eq!(
            stack
                .iter()
                .map(|f| f.function.as_str())
                .collect::<Vec<_>>(),
            ["main.b", "main.a"]
        );
    }

    #[test]
    fn applies_the_load_bias_of_a_pie() {
        let mut symbolizer = symbolizer(0x5555_0000_0000);
        assert_eq!(symbolizer.at(0x5555_0040_1025)[0].function, "main.b");
        assert!(symbolizer.at(0x401025).is_empty(), "below the bias");
    }

    #[test]
    fn reads_inline_tree_entries() {
        let mut tree = vec![0u8; 32];
        tree[16 + 4..16 + 8].copy_from_slice(&7u32.to_le_bytes());
        tree[16 + 8..16 + 12].copy_from_slice(&(-3i32).to_le_bytes());
        assert_eq!(inlined_call(&tree, 1), Ok((7, -3)));
        assert!(inlined_call(&tree, 2).is_err());
        assert!(inlined_call(&tree, usize::MAX).is_err());
    }
}
