//! Finding `runtime.firstmoduledata` in a stripped binary, for the text start and gofunc.
//!
//! Go 1.26 stopped writing pcHeader.textStart ("no longer stored as it requires a relocation",
//! runtime/symtab.go) and moved the moduledata into its own `.go.module` section; before, it
//! sat in `.noptrdata`. With external linking the text start is not the `.text` section's
//! start either (the C start files come first: measured 0x401100 vs runtime.text 0x4018c0).
//! moduledata.text is right in every case, so we find the moduledata the way debuggers and
//! GoReSym do: a word equal to the pclntab's address, checked against the fields that must
//! follow it.
//!
//! Layout from runtime/symtab.go `moduledata` (64-bit), stable through Go 1.27 up to `types`:
//! pcHeader *pcHeader @0; funcnametab, cutab, filetab, pctab, pclntable, ftab slices @8, 32,
//! 56, 80, 104, 128 (pointer, len, cap); findfunctab @152; minpc @160; maxpc @168; text @176;
//! etext @184; ... Go 1.21-1.26: types @296, etypes @304, rodata @312, gofunc @320. Go 1.27
//! added typedesclen after types and itaboffset, itabsize before rodata: rodata @336,
//! gofunc @344.
//!
//! The pointers are link-time addresses. In a PIE they also carry R_X86_64_RELATIVE
//! relocations, but both Go's linker and GNU ld write the value in place too (measured on
//! 1.21 and 1.26, internal and external linking), so the file holds them.

use super::buildinfo::GoVersion;
use super::elf::GoElf;
use super::pclntab::PcHeader;

const OFF_FUNCNAMETAB: u64 = 8;
const OFF_FTAB: u64 = 128;
const OFF_MINPC: u64 = 160;
const OFF_MAXPC: u64 = 168;
const OFF_TEXT: u64 = 176;
const OFF_ETEXT: u64 = 184;

/// Sections that hold the moduledata: `.go.module` from Go 1.26, `.noptrdata` before; the
/// others in case a linker merges sections.
const CANDIDATE_SECTIONS: &[&str] = &[".go.module", ".noptrdata", ".data.rel.ro", ".data"];

/// Where gofunc (and rodata just before it) sit in the moduledata, per Go release.
fn gofunc_offset(version: &GoVersion) -> Option<u64> {
    match version.release() {
        (1, 21..=26) => Some(320),
        (1, 27) => Some(344),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleData {
    pub address: u64,
    pub text: u64,
    pub etext: u64,
    /// The base of funcdata (inline trees, among others), when this Go release's layout is
    /// known and the value checks out.
    pub gofunc: Option<u64>,
}

/// The function table's first and last entry offsets from the text start (ftab[0].entryoff
/// and ftab[nfunc].entryoff), which moduledata's minpc and maxpc must match.
pub struct FunctabSpan {
    pub first: u32,
    pub last: u32,
}

pub fn find(
    elf: &GoElf,
    pclntab_address: u64,
    header: &PcHeader,
    span: &FunctabSpan,
    version: &GoVersion,
) -> Option<ModuleData> {
    let needle = pclntab_address.to_le_bytes();
    for name in CANDIDATE_SECTIONS {
        let Some(section) = elf.section(name) else {
            continue;
        };
        let Some(bytes) = elf.section_bytes(section) else {
            continue;
        };
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            if word != needle {
                continue;
            }
            let address = section.address + 8 * i as u64;
            if let Some(found) = check(elf, address, pclntab_address, header, span, version) {
                return Some(found);
            }
        }
    }
    None
}

fn check(
    elf: &GoElf,
    address: u64,
    pclntab_address: u64,
    header: &PcHeader,
    span: &FunctabSpan,
    version: &GoVersion,
) -> Option<ModuleData> {
    let word = |offset: u64| elf.read_u64(address + offset);
    let expect = |offset: u64, value: u64| word(offset) == Some(value);
    let nfunc = header.nfunc as u64;
    let consistent = expect(
        OFF_FUNCNAMETAB,
        pclntab_address + header.funcname_offset as u64,
    ) && expect(OFF_FTAB, pclntab_address + header.pcln_offset as u64)
        && expect(OFF_FTAB + 8, nfunc + 1);
    if !consistent {
        return None;
    }
    let text = word(OFF_TEXT)?;
    let etext = word(OFF_ETEXT)?;
    let minpc_ok = expect(OFF_MINPC, text + u64::from(span.first));
    let maxpc_ok = expect(OFF_MAXPC, text + u64::from(span.last));
    if text == 0 || !minpc_ok || !maxpc_ok || !elf.is_executable(text) {
        return None;
    }
    let gofunc = gofunc_offset(version).and_then(|offset| {
        let rodata = word(offset - 8)?;
        let gofunc = word(offset)?;
        // gofunc is a symbol inside rodata, in a section with bytes in the file.
        (gofunc >= rodata && elf.section_at(gofunc).is_some()).then_some(gofunc)
    });
    Some(ModuleData {
        address,
        text,
        etext,
        gofunc,
    })
}
