//! Struct layouts from the DWARF of an unstripped Go binary, read with `gimli`.
//!
//! What Go's linker writes (cmd/link/internal/ld/dwarf.go, `defgotype`): every type the program
//! uses is a top-level DIE named with its full import path ("net/http.persistConn",
//! "internal/poll.FD", "runtime.g"); a struct is a DW_TAG_structure_type with DW_AT_byte_size
//! and one DW_TAG_member per field, whose DW_AT_data_member_location is a constant byte offset;
//! a named type is also a DW_TAG_typedef of its underlying type (an interface's is the typedef
//! of `runtime.iface` or `runtime.eface`). Go adds its own attributes: DW_AT_go_kind (0x2900,
//! the reflect.Kind of the type) on types and DW_AT_go_embedded_field (0x2903) on members.
//! Since Go 1.11 the sections are zlib-compressed (SHF_COMPRESSED since 1.12); `object`
//! inflates them.
//!
//! Only type DIEs and struct members are kept (a few tens of thousands of small records for a
//! relay); functions, variables and line tables are skipped.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{constants, AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

use super::elf::GoElf;

/// DW_AT_go_kind: the reflect.Kind of a Go type (cmd/internal/dwarf, `DW_AT_go_kind`).
const DW_AT_GO_KIND: constants::DwAt = constants::DwAt(0x2900);
/// reflect.Kind fits in the low 5 bits (internal/abi.KindMask).
const KIND_MASK: u64 = 0x1f;
/// How many typedefs to follow from a name to its underlying type before calling it a loop.
const MAX_TYPEDEF_HOPS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DwarfError {
    #[error("DWARF unreadable: {0}")]
    Corrupt(String),
    #[error("DWARF has no struct {0}")]
    NoStruct(String),
    #[error("DWARF struct {ty} has no field {member}")]
    NoMember { ty: String, member: String },
    #[error("DWARF field {ty}.{member} is not a struct, so {rest} cannot be inside it")]
    NotAStruct {
        ty: String,
        member: String,
        rest: String,
    },
    #[error("DWARF field {ty}.{member} has no constant offset")]
    NoOffset { ty: String, member: String },
}

impl From<gimli::Error> for DwarfError {
    fn from(err: gimli::Error) -> Self {
        DwarfError::Corrupt(err.to_string())
    }
}

impl From<object::Error> for DwarfError {
    fn from(err: object::Error) -> Self {
        DwarfError::Corrupt(err.to_string())
    }
}

/// A type DIE, by its offset in .debug_info.
#[derive(Debug, Clone)]
struct TypeDie {
    tag: constants::DwTag,
    name: Option<String>,
    byte_size: Option<u64>,
    go_kind: Option<u8>,
    /// DW_AT_type: what a typedef or pointer refers to.
    target: Option<usize>,
    members: Vec<MemberDie>,
}

#[derive(Debug, Clone)]
struct MemberDie {
    name: String,
    offset: Option<u64>,
    ty: Option<usize>,
}

/// A field found by path: where it is from the start of the outermost struct, and what its
/// type is (after following typedefs to the first size and kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u64,
    pub size: Option<u64>,
    /// reflect.Kind (DW_AT_go_kind) of the field's type.
    pub go_kind: Option<u8>,
    /// The field type's name as DWARF spells it ("int", "net.Conn", "*net.netFD").
    pub type_name: Option<String>,
}

/// The struct types of one binary's DWARF.
#[derive(Debug, Default)]
pub struct DwarfTypes {
    dies: HashMap<usize, TypeDie>,
    /// DW_TAG_structure_type by name; the first one wins (Go writes each type once).
    structs: HashMap<String, usize>,
}

impl DwarfTypes {
    /// Reads the types of `elf`'s DWARF; `Ok(None)` when the binary has none (`-ldflags -w`).
    pub fn read(elf: &GoElf) -> Result<Option<Self>, DwarfError> {
        if !elf.has_dwarf {
            return Ok(None);
        }
        let file = object::File::parse(elf.bytes())?;
        if file.section_by_name(".debug_info").is_none() {
            // Pre-1.12 `.zdebug_info` (GNU-style compressed); the layer starts at 1.21.
            return Err(DwarfError::Corrupt(
                "only a .zdebug_info section, which Go 1.21+ does not write".into(),
            ));
        }
        let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, object::Error> {
            match file.section_by_name(id.name()) {
                Some(section) => section.uncompressed_data(),
                None => Ok(Cow::Borrowed(&[])),
            }
        };
        let sections = gimli::DwarfSections::load(load)?;
        let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
        Self::from_dwarf(&dwarf).map(Some)
    }

    fn from_dwarf(dwarf: &gimli::Dwarf<EndianSlice<'_, LittleEndian>>) -> Result<Self, DwarfError> {
        let mut types = DwarfTypes::default();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next()? {
            let unit = dwarf.unit(header)?;
            // Units come from .debug_info, so this is a .debug_info offset (DW_FORM_ref_addr's).
            let base = unit.header.offset().0;
            // The enclosing type DIE of each depth, so a member finds its struct.
            let mut parents: Vec<Option<usize>> = Vec::new();
            let mut entries = unit.entries();
            while let Some(entry) = entries.next_dfs()? {
                let depth = usize::try_from(entry.depth())
                    .map_err(|_| DwarfError::Corrupt("negative DIE depth".into()))?;
                parents.truncate(depth);
                let at = base + entry.offset().0;
                let tag = entry.tag();
                let name = match entry.attr_value(constants::DW_AT_name) {
                    Some(value) => Some(
                        dwarf
                            .attr_string(&unit, value)?
                            .to_string_lossy()
                            .into_owned(),
                    ),
                    None => None,
                };
                let target = match entry.attr_value(constants::DW_AT_type) {
                    Some(AttributeValue::UnitRef(offset)) => Some(base + offset.0),
                    Some(AttributeValue::DebugInfoRef(offset)) => Some(offset.0),
                    _ => None,
                };
                let mut kept = None;
                if tag == constants::DW_TAG_member {
                    let parent = depth
                        .checked_sub(1)
                        .and_then(|up| parents.get(up).copied().flatten());
                    if let (Some(parent), Some(name)) = (parent, name) {
                        let offset = entry
                            .attr(constants::DW_AT_data_member_location)
                            .and_then(|attr| attr.udata_value());
                        if let Some(die) = types.dies.get_mut(&parent) {
                            die.members.push(MemberDie {
                                name,
                                offset,
                                ty: target,
                            });
                        }
                    }
                } else if is_type(tag) {
                    if tag == constants::DW_TAG_structure_type {
                        if let Some(name) = &name {
                            types.structs.entry(name.clone()).or_insert(at);
                        }
                    }
                    types.dies.insert(
                        at,
                        TypeDie {
                            tag,
                            name,
                            byte_size: entry
                                .attr(constants::DW_AT_byte_size)
                                .and_then(|attr| attr.udata_value()),
                            go_kind: entry
                                .attr(DW_AT_GO_KIND)
                                .and_then(|attr| attr.udata_value())
                                .and_then(|kind| u8::try_from(kind & KIND_MASK).ok()),
                            target,
                            members: Vec::new(),
                        },
                    );
                    kept = Some(at);
                }
                parents.resize(depth, None);
                parents.push(kept);
            }
        }
        Ok(types)
    }

    /// How many struct types were read (for tests and diagnostics).
    pub fn struct_count(&self) -> usize {
        self.structs.len()
    }

    /// The field at `path` ("bufPipe.b": a field of a struct-valued field, offsets added) of the
    /// struct named `ty` ("net/http.http2clientStream").
    pub fn member(&self, ty: &str, path: &str) -> Result<MemberInfo, DwarfError> {
        let mut die_at = *self
            .structs
            .get(ty)
            .ok_or_else(|| DwarfError::NoStruct(ty.to_owned()))?;
        let mut offset = 0u64;
        let mut segments = path.split('.').peekable();
        let mut walked = ty.to_owned();
        while let Some(segment) = segments.next() {
            let die = self
                .dies
                .get(&die_at)
                .ok_or_else(|| DwarfError::NoStruct(walked.clone()))?;
            let member = die
                .members
                .iter()
                .find(|m| m.name == segment)
                .ok_or_else(|| DwarfError::NoMember {
                    ty: walked.clone(),
                    member: segment.to_owned(),
                })?;
            let here = member.offset.ok_or_else(|| DwarfError::NoOffset {
                ty: walked.clone(),
                member: segment.to_owned(),
            })?;
            offset = offset.checked_add(here).ok_or_else(|| {
                DwarfError::Corrupt(format!("{walked}.{segment}: offset overflow"))
            })?;
            let ty_at = member.ty;
            if segments.peek().is_none() {
                return Ok(self.describe(offset, ty_at));
            }
            // Inside a struct-valued field: its type (through typedefs) must be a struct.
            let inner = ty_at
                .and_then(|at| self.underlying(at))
                .filter(|at| {
                    self.dies
                        .get(at)
                        .is_some_and(|d| d.tag == constants::DW_TAG_structure_type)
                })
                .ok_or_else(|| DwarfError::NotAStruct {
                    ty: walked.clone(),
                    member: segment.to_owned(),
                    rest: segments.clone().collect::<Vec<_>>().join("."),
                })?;
            walked = format!("{walked}.{segment}");
            die_at = inner;
        }
        // An empty path has one (empty) segment, so the loop always returns or fails.
        Err(DwarfError::NoMember {
            ty: ty.to_owned(),
            member: path.to_owned(),
        })
    }

    /// A typedef's underlying type (other tags are their own).
    fn underlying(&self, mut at: usize) -> Option<usize> {
        for _ in 0..MAX_TYPEDEF_HOPS {
            let die = self.dies.get(&at)?;
            if die.tag != constants::DW_TAG_typedef {
                return Some(at);
            }
            at = die.target?;
        }
        None
    }

    /// The size and kind of the type at `ty_at`: the first of each along its typedef chain
    /// (a named interface's typedef has the kind, `runtime.iface`'s struct has the size).
    fn describe(&self, offset: u64, ty_at: Option<usize>) -> MemberInfo {
        let mut info = MemberInfo {
            offset,
            size: None,
            go_kind: None,
            type_name: None,
        };
        let mut at = ty_at;
        for _ in 0..MAX_TYPEDEF_HOPS {
            let Some(die) = at.and_then(|a| self.dies.get(&a)) else {
                break;
            };
            if info.type_name.is_none() {
                info.type_name = die.name.clone();
            }
            info.size = info.size.or(die.byte_size);
            info.go_kind = info.go_kind.or(die.go_kind);
            if die.tag != constants::DW_TAG_typedef {
                break;
            }
            at = die.target;
        }
        info
    }
}

fn is_type(tag: constants::DwTag) -> bool {
    matches!(
        tag,
        constants::DW_TAG_structure_type
            | constants::DW_TAG_typedef
            | constants::DW_TAG_pointer_type
            | constants::DW_TAG_base_type
            | constants::DW_TAG_array_type
            | constants::DW_TAG_subroutine_type
            | constants::DW_TAG_unspecified_type
    )
}
