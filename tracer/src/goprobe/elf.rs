//! The ELF facts the Go layer needs, read once with the `object` crate into owned tables, so
//! the rest of goprobe reads bytes by virtual address without borrowing the parser.

use std::path::Path;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{LittleEndian, Object, ObjectSection};

use super::GoLayerRefusal;

/// One PT_LOAD program header: how a range of virtual addresses comes from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub executable: bool,
}

/// A section with bytes in the file (not SHT_NOBITS).
#[derive(Debug, Clone)]
pub struct SectionInfo {
    pub name: String,
    pub address: u64,
    pub file_offset: u64,
    pub size: u64,
}

/// An x86-64 little-endian ELF executable, whole in memory.
#[derive(Debug)]
pub struct GoElf {
    data: Vec<u8>,
    pub loads: Vec<LoadSegment>,
    pub sections: Vec<SectionInfo>,
    /// ET_DYN: a position-independent executable (`-buildmode=pie`), loaded at a random base.
    pub pie: bool,
    /// No PT_INTERP: no dynamic loader runs before Go's own start code.
    pub static_linked: bool,
    /// A .symtab section is present (`-ldflags -s` removes it).
    pub has_symtab: bool,
    /// A .debug_info section is present (`-ldflags -w` removes it), compressed or not.
    pub has_dwarf: bool,
}

impl GoElf {
    pub fn open(path: &Path) -> Result<Self, GoLayerRefusal> {
        let data = std::fs::read(path).map_err(|source| GoLayerRefusal::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, GoLayerRefusal> {
        let (loads, sections, pie, static_linked) = {
            let file = match object::FileKind::parse(&*data) {
                Ok(object::FileKind::Elf64) => ElfFile64::<LittleEndian>::parse(&*data)
                    .map_err(|err| GoLayerRefusal::NotElf(err.to_string()))?,
                Ok(kind) => {
                    return Err(GoLayerRefusal::NotElf(format!(
                        "a {kind:?} file, not 64-bit ELF"
                    )))
                }
                Err(err) => return Err(GoLayerRefusal::NotElf(err.to_string())),
            };
            let header = file.elf_header();
            let endian = file.endian();
            let machine = header.e_machine(endian);
            if machine != elf::EM_X86_64 {
                return Err(GoLayerRefusal::UnsupportedArch(format!(
                    "ELF machine {machine}"
                )));
            }
            let mut loads = Vec::new();
            let mut static_linked = true;
            for phdr in file.elf_program_headers() {
                match phdr.p_type(endian) {
                    elf::PT_LOAD => loads.push(LoadSegment {
                        vaddr: phdr.p_vaddr(endian),
                        file_offset: phdr.p_offset(endian),
                        file_size: phdr.p_filesz(endian),
                        executable: phdr.p_flags(endian) & elf::PF_X != 0,
                    }),
                    elf::PT_INTERP => static_linked = false,
                    _ => {}
                }
            }
            let sections: Vec<SectionInfo> = file
                .sections()
                .filter_map(|section| {
                    let (file_offset, size) = section.file_range()?;
                    Some(SectionInfo {
                        name: section.name().ok()?.to_owned(),
                        address: section.address(),
                        file_offset,
                        size,
                    })
                })
                .collect();
            let pie = header.e_type(endian) == elf::ET_DYN;
            (loads, sections, pie, static_linked)
        };
        let has_symtab = sections.iter().any(|s: &SectionInfo| s.name == ".symtab");
        let has_dwarf = sections
            .iter()
            .any(|s: &SectionInfo| s.name == ".debug_info" || s.name == ".zdebug_info");
        Ok(Self {
            data,
            loads,
            sections,
            pie,
            static_linked,
            has_symtab,
            has_dwarf,
        })
    }

    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn section_bytes(&self, section: &SectionInfo) -> Option<&[u8]> {
        let start = usize::try_from(section.file_offset).ok()?;
        let end = start.checked_add(usize::try_from(section.size).ok()?)?;
        self.data.get(start..end)
    }

    /// The section holding `vaddr`, if any.
    pub fn section_at(&self, vaddr: u64) -> Option<&SectionInfo> {
        self.sections
            .iter()
            .find(|s| s.address != 0 && vaddr >= s.address && vaddr - s.address < s.size)
    }

    /// Where `vaddr` is in the file: address − segment vaddr + segment file offset, in the
    /// PT_LOAD that maps it from the file. This is also the offset a uprobe takes (tracefs
    /// `uprobe_events` and aya's `UProbe::attach` both want file offsets, not addresses).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|seg| {
            let delta = vaddr.checked_sub(seg.vaddr)?;
            (delta < seg.file_size).then(|| seg.file_offset + delta)
        })
    }

    /// Whether `vaddr` is in an executable PT_LOAD.
    pub fn is_executable(&self, vaddr: u64) -> bool {
        self.loads.iter().any(|seg| {
            seg.executable
                && vaddr
                    .checked_sub(seg.vaddr)
                    .is_some_and(|delta| delta < seg.file_size)
        })
    }

    /// `len` bytes at `vaddr`, when all of them come from the same PT_LOAD.
    pub fn read(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let seg = self.loads.iter().find(|seg| {
            vaddr
                .checked_sub(seg.vaddr)
                .is_some_and(|delta| delta < seg.file_size)
        })?;
        let delta = vaddr - seg.vaddr;
        if len > seg.file_size - delta {
            return None;
        }
        let start = usize::try_from(seg.file_offset + delta).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let bytes = self.read(vaddr, 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// "stripped, static, non-PIE" for the one-line summary.
    pub fn describe_form(&self) -> String {
        format!(
            "{}, {}, {}",
            if self.has_symtab {
                "not stripped"
            } else {
                "stripped"
            },
            if self.static_linked {
                "static"
            } else {
                "dynamic"
            },
            if self.pie { "PIE" } else { "non-PIE" },
        )
    }
}
