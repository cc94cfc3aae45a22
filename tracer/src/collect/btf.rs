//! Struct member offsets from the running kernel's BTF, so that what the eBPF side
//! reads (tcp_sock.rcv_nxt, copied_seq...) follows this kernel's layout.
//!
//! A small reader of its own rather than a crate: btf-rs, the crate that does this,
//! is LGPL-2.1-or-later, which tracer (MIT OR Apache-2.0, shipped as one static
//! binary) should not take on; aya-obj, already a dependency, parses BTF but keeps
//! its type and member lookups crate-private. Member offsets need only the type
//! table and the strings, which is what this reads.
//!
//! Format: Documentation/bpf/btf.rst and include/uapi/linux/btf.h.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// A parsed BTF file, loaded once for many lookups.
pub struct KernelBtf {
    path: PathBuf,
    /// Indexed by type id; id 0 is void and has a placeholder.
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Named structs and unions, by name.
    composites: HashMap<String, u32>,
    /// `btf_trace_<event>` typedefs (the prototypes raw tracepoints are called with), by event.
    trace_protos: HashMap<String, u32>,
    /// Enumerators' values by name (C gives every enumerator a name unique in the program).
    enumerators: HashMap<String, i64>,
}

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` for structs, unions and ints; `type` for modifiers and typedefs.
    size_or_type: u32,
    /// This type's members, a range of `KernelBtf::members` (structs and unions; a function
    /// prototype's parameters, with offset 0).
    members: std::ops::Range<usize>,
    /// The u32 that follows an INT (encoding, bit offset, bits).
    int_data: u32,
}

struct Member {
    name_off: u32,
    type_id: u32,
    offset: u32,
}

// BTF_MAGIC and the kinds, include/uapi/linux/btf.h.
const BTF_MAGIC: u16 = 0xeb9f;
const BTF_KIND_INT: u32 = 1;
const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;
const BTF_KIND_ENUM: u32 = 6;
const BTF_KIND_FWD: u32 = 7;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_FUNC: u32 = 12;
const BTF_KIND_FUNC_PROTO: u32 = 13;
const BTF_KIND_VAR: u32 = 14;
const BTF_KIND_DATASEC: u32 = 15;
const BTF_KIND_FLOAT: u32 = 16;
const BTF_KIND_DECL_TAG: u32 = 17;
const BTF_KIND_TYPE_TAG: u32 = 18;
const BTF_KIND_ENUM64: u32 = 19;

// sizeof(struct btf_header) of BTF version 1; newer headers may be longer (hdr_len).
const BTF_HEADER_LEN: usize = 24;

// Nesting of anonymous members (and modifier chains) is a handful deep in real
// kernels; a limit keeps a malformed file with a type cycle from recursing forever.
const MAX_DEPTH: usize = 32;

impl KernelBtf {
    /// Reads and parses the BTF at `path` (normally /sys/kernel/btf/vmlinux).
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => anyhow!(
                "this kernel has no BTF at {}; tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                path.display()
            ),
            ErrorKind::PermissionDenied => anyhow!(
                "cannot read {}: permission denied (run tracer as root)",
                path.display()
            ),
            _ => anyhow!(e).context(format!("reading kernel BTF from {}", path.display())),
        })?;
        Self::parse(path, &data).with_context(|| {
            format!(
                "parsing {} as BTF (is it the kernel's BTF, e.g. /sys/kernel/btf/vmlinux?)",
                path.display()
            )
        })
    }

    fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        if data.len() < BTF_HEADER_LEN {
            bail!("{} bytes is too short for a BTF header", data.len());
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic == BTF_MAGIC.swap_bytes() {
            bail!("the BTF is of the other byte order than this machine");
        }
        if magic != BTF_MAGIC {
            bail!("bad magic {magic:#06x}, expected {BTF_MAGIC:#06x}");
        }
        let version = data[2];
        if version != 1 {
            bail!("BTF version {version} is not supported (only version 1)");
        }
        let header_len = read_u32(data, 4)? as usize;
        let type_off = read_u32(data, 8)? as usize;
        let type_len = read_u32(data, 12)? as usize;
        let str_off = read_u32(data, 16)? as usize;
        let str_len = read_u32(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| -> Result<&[u8]> {
            let start = header_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok(&data[start..end]),
                _ => bail!("the {what} section runs past the end of the file"),
            }
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut btf = KernelBtf {
            path: path.to_path_buf(),
            types: vec![Type {
                name_off: 0,
                kind: 0,
                kind_flag: false,
                size_or_type: 0,
                members: 0..0,
                int_data: 0,
            }],
            members: Vec::new(),
            strings,
            composites: HashMap::new(),
            trace_protos: HashMap::new(),
            enumerators: HashMap::new(),
        };
        let mut pos = 0;
        while pos < type_data.len() {
            let id = btf.types.len() as u32;
            let name_off = read_u32(type_data, pos)?;
            let info = read_u32(type_data, pos + 4)?;
            let size_or_type = read_u32(type_data, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut ty = Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                members: 0..0,
                int_data: 0,
            };
            // Each kind is followed by kind-specific data whose size we must know to
            // reach the next type.
            let extra = match kind {
                BTF_KIND_INT => {
                    ty.int_data = read_u32(type_data, pos)?;
                    4
                }
                BTF_KIND_STRUCT | BTF_KIND_UNION => {
                    let first = btf.members.len();
                    for i in 0..vlen {
                        let at = pos + i * 12;
                        btf.members.push(Member {
                            name_off: read_u32(type_data, at)?,
                            type_id: read_u32(type_data, at + 4)?,
                            offset: read_u32(type_data, at + 8)?,
                        });
                    }
                    ty.members = first..btf.members.len();
                    if name_off != 0 {
                        let name = btf.string(name_off)?.to_string();
                        // Keep the first definition should a name repeat.
                        btf.composites.entry(name).or_insert(id);
                    }
                    vlen * 12
                }
                BTF_KIND_ARRAY => 12,
                BTF_KIND_ENUM => {
                    for i in 0..vlen {
                        let at = pos + i * 8;
                        let name = btf.string(read_u32(type_data, at)?)?.to_owned();
                        let value = i64::from(read_u32(type_data, at + 4)? as i32);
                        btf.enumerators.entry(name).or_insert(value);
                    }
                    vlen * 8
                }
                BTF_KIND_FUNC_PROTO => {
                    let first = btf.members.len();
                    for i in 0..vlen {
                        let at = pos + i * 8;
                        btf.members.push(Member {
                            name_off: read_u32(type_data, at)?,
                            type_id: read_u32(type_data, at + 4)?,
                            offset: 0,
                        });
                    }
                    ty.members = first..btf.members.len();
                    vlen * 8
                }
                BTF_KIND_VAR => 4,
                BTF_KIND_DATASEC => vlen * 12,
                BTF_KIND_DECL_TAG => 4,
                BTF_KIND_ENUM64 => {
                    for i in 0..vlen {
                        let at = pos + i * 12;
                        let name = btf.string(read_u32(type_data, at)?)?.to_owned();
                        let lo = u64::from(read_u32(type_data, at + 4)?);
                        let hi = u64::from(read_u32(type_data, at + 8)?);
                        btf.enumerators
                            .entry(name)
                            .or_insert((hi << 32 | lo) as i64);
                    }
                    vlen * 12
                }
                BTF_KIND_TYPEDEF => {
                    if let Some(event) = btf.string(name_off)?.strip_prefix("btf_trace_") {
                        btf.trace_protos.insert(event.to_owned(), id);
                    }
                    0
                }
                BTF_KIND_PTR | BTF_KIND_FWD | BTF_KIND_VOLATILE | BTF_KIND_CONST
                | BTF_KIND_RESTRICT | BTF_KIND_FUNC | BTF_KIND_FLOAT | BTF_KIND_TYPE_TAG => 0,
                // An unknown kind has data of unknown size: nothing after it can be found.
                _ => bail!("type {id} has BTF kind {kind}, which this tracer does not know"),
            };
            pos += extra;
            if pos > type_data.len() {
                bail!("type {id} runs past the end of the type section");
            }
            btf.types.push(ty);
        }
        Ok(btf)
    }

    /// The arguments a raw tracepoint program attached to `event` gets, as C types
    /// (`struct sock *`, `int`), from the kernel's `btf_trace_<event>` prototype without its
    /// leading `void *` (the tracepoint's private data). None when the kernel has no such
    /// tracepoint or its prototype has an unexpected shape.
    pub fn raw_tracepoint_args(&self, event: &str) -> Option<Vec<String>> {
        let typedef = *self.trace_protos.get(event)?;
        let ptr = self.ty(self.ty(typedef).ok()?.size_or_type).ok()?;
        if ptr.kind != BTF_KIND_PTR {
            return None;
        }
        let proto = self.ty(ptr.size_or_type).ok()?;
        if proto.kind != BTF_KIND_FUNC_PROTO {
            return None;
        }
        let params = &self.members[proto.members.clone()];
        params
            .iter()
            .skip(1)
            .map(|p| self.c_type(p.type_id, 0))
            .collect()
    }

    /// The value of enumerator `name` (`ITER_UBUF`, `BPF_FUNC_task_pt_regs`), if the kernel's
    /// BTF has it: which helpers the kernel knows is an enum there (`enum bpf_func_id`).
    pub fn enumerator(&self, name: &str) -> Option<i64> {
        self.enumerators.get(name).copied()
    }

    /// A type as C spells it, without qualifiers: `struct sock *`, `int`, `void *`.
    fn c_type(&self, id: u32, depth: usize) -> Option<String> {
        if depth > MAX_DEPTH {
            return None;
        }
        if id == 0 {
            return Some("void".to_owned());
        }
        let ty = self.ty(id).ok()?;
        let name = || self.string(ty.name_off).ok().map(str::to_owned);
        match ty.kind {
            BTF_KIND_PTR => Some(format!("{} *", self.c_type(ty.size_or_type, depth + 1)?)),
            BTF_KIND_STRUCT => Some(format!("struct {}", name()?)),
            BTF_KIND_UNION => Some(format!("union {}", name()?)),
            BTF_KIND_INT | BTF_KIND_TYPEDEF | BTF_KIND_FLOAT => name(),
            BTF_KIND_CONST | BTF_KIND_VOLATILE | BTF_KIND_RESTRICT | BTF_KIND_TYPE_TAG => {
                self.c_type(ty.size_or_type, depth + 1)
            }
            _ => None,
        }
    }

    /// Byte offset of `member` inside `struct strct` (or `union strct`), looking
    /// through anonymous struct/union members.
    pub fn member_offset(&self, strct: &str, member: &str) -> Result<u32> {
        let id = *self.composites.get(strct).ok_or_else(|| {
            anyhow!(
                "struct {strct} is not in the kernel BTF at {}; tracer cannot read this kernel's \
                 TCP state (is {} the running kernel's BTF, and is this a Linux kernel tracer supports?)",
                self.path.display(),
                self.path.display()
            )
        })?;
        let (bits, bitfield) = self.find_member(id, member, 0, 0)?.ok_or_else(|| {
            anyhow!(
                "struct {strct} has no member {member} in the kernel BTF at {}; tracer does not \
                 support this kernel's layout of it (see: bpftool btf dump file {} format c)",
                self.path.display(),
                self.path.display()
            )
        })?;
        if bits % 8 != 0 {
            let what = if bitfield { "a bitfield" } else { "a member" };
            bail!(
                "{strct}.{member} is {what} starting at bit {bits}, not on a byte boundary; \
                 tracer can only read byte-aligned members"
            );
        }
        Ok(bits / 8)
    }

    /// Bit offset of `member` in composite `id` (plus `base`), and whether it is a
    /// bitfield. Anonymous members are searched in place, as C name lookup does.
    fn find_member(
        &self,
        id: u32,
        member: &str,
        base: u32,
        depth: usize,
    ) -> Result<Option<(u32, bool)>> {
        if depth > MAX_DEPTH {
            bail!("anonymous members nest deeper than {MAX_DEPTH} levels (a type cycle?)");
        }
        let ty = self.ty(id)?;
        for m in &self.members[ty.members.clone()] {
            // kind_flag set: the top 8 bits are the bitfield size, the rest the offset.
            let (bit_offset, bitfield_size) = if ty.kind_flag {
                (m.offset & 0x00ff_ffff, m.offset >> 24)
            } else {
                (m.offset, 0)
            };
            let at = base
                .checked_add(bit_offset)
                .ok_or_else(|| anyhow!("member offset overflows"))?;
            if m.name_off != 0 {
                if self.string(m.name_off)? == member {
                    return Ok(Some(self.legacy_bitfield(
                        m.type_id,
                        at,
                        bitfield_size != 0,
                    )?));
                }
                continue;
            }
            let inner = self.skip_modifiers(m.type_id)?;
            if matches!(self.ty(inner)?.kind, BTF_KIND_STRUCT | BTF_KIND_UNION) {
                if let Some(found) = self.find_member(inner, member, at, depth + 1)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Without kind_flag, a bitfield is an INT member whose own data carries a bit
    /// offset and a width narrower than the int.
    fn legacy_bitfield(&self, type_id: u32, at: u32, bitfield: bool) -> Result<(u32, bool)> {
        let ty = self.ty(self.skip_modifiers(type_id)?)?;
        if ty.kind != BTF_KIND_INT {
            return Ok((at, bitfield));
        }
        // BTF_INT_OFFSET and BTF_INT_BITS, include/uapi/linux/btf.h.
        let int_offset = (ty.int_data >> 16) & 0xff;
        let int_bits = ty.int_data & 0xff;
        let legacy = int_offset != 0 || int_bits != ty.size_or_type.saturating_mul(8);
        Ok((at + int_offset, bitfield || legacy))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn skip_modifiers(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            match self.ty(id)?.kind {
                BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
                | BTF_KIND_TYPE_TAG => id = self.ty(id)?.size_or_type,
                _ => return Ok(id),
            }
        }
        bail!("type {id} is a chain of more than {MAX_DEPTH} typedefs/qualifiers (a type cycle?)")
    }

    fn ty(&self, id: u32) -> Result<&Type> {
        self.types
            .get(id as usize)
            .ok_or_else(|| anyhow!("type id {id} is out of range ({} types)", self.types.len()))
    }

    fn string(&self, offset: u32) -> Result<&str> {
        let tail = self
            .strings
            .get(offset as usize..)
            .ok_or_else(|| anyhow!("string offset {offset} is past the string section"))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| anyhow!("string at offset {offset} is not NUL-terminated"))?;
        std::str::from_utf8(&tail[..end])
            .with_context(|| format!("string at offset {offset} is not UTF-8"))
    }
}

fn read_u32(data: &[u8], at: usize) -> Result<u32> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| anyhow!("truncated at byte {at}"))
}

#[cfg(test)]
// A test fails by panicking, so unwrapping is how it reports.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    fn vmlinux() -> Option<&'static KernelBtf> {
        static BTF: OnceLock<Option<KernelBtf>> = OnceLock::new();
        BTF.get_or_init(|| {
            if !Path::new(VMLINUX).exists() {
                println!("skipping: {VMLINUX} does not exist (kernel without BTF)");
                return None;
            }
            let start = std::time::Instant::now();
            let btf = KernelBtf::load(Path::new(VMLINUX)).unwrap();
            println!("loading {VMLINUX} took {:?}", start.elapsed());
            Some(btf)
        })
        .as_ref()
    }

    /// Member bit offsets of `strct` as `bpftool btf dump ... format raw` prints them,
    /// or None when bpftool is missing.
    fn bpftool_members(strct: &str) -> Option<HashMap<String, u32>> {
        let output = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output();
        let output = match output {
            Ok(o) if o.status.success() => o,
            other => {
                println!("skipping the bpftool cross-check: {other:?}");
                return None;
            }
        };
        let text = String::from_utf8(output.stdout).unwrap();
        let head = format!("STRUCT '{strct}' ");
        let mut lines = text
            .lines()
            .skip_while(|l| !(l.starts_with('[') && l.contains(&head)));
        lines.next().unwrap();
        let mut members = HashMap::new();
        for line in lines.take_while(|l| l.starts_with('\t')) {
            // \t'name' type_id=N bits_offset=M [bitfield_size=K]
            let name = line.trim().split('\'').nth(1).unwrap().to_string();
            let bits = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bits_offset="))
                .unwrap()
                .parse()
                .unwrap();
            members.insert(name, bits);
        }
        Some(members)
    }

    #[test]
    fn raw_tracepoint_prototypes_come_from_btf() {
        let Some(btf) = vmlinux() else { return };
        // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate): qualifiers
        // are left out.
        let args = btf.raw_tracepoint_args("inet_sock_set_state").unwrap();
        assert_eq!(args, ["struct sock *", "int", "int"]);
        assert!(btf.raw_tracepoint_args("no_such_tracepoint_xyz").is_none());
        // sock_recv_length exists from Linux 6.3.
        if let Some(args) = btf.raw_tracepoint_args("sock_recv_length") {
            assert_eq!(args, ["struct sock *", "int", "int"]);
        }
    }

    #[test]
    fn enumerators_come_from_btf() {
        let Some(btf) = vmlinux() else { return };
        // Helper ids are UAPI (include/uapi/linux/bpf.h): the kernel's own enum must agree.
        assert_eq!(btf.enumerator("BPF_FUNC_map_lookup_elem"), Some(1));
        assert_eq!(btf.enumerator("BPF_FUNC_get_current_task_btf"), Some(158));
        assert_eq!(btf.enumerator("BPF_FUNC_task_pt_regs"), Some(175));
        assert_eq!(btf.enumerator("TCP_CLOSE_WAIT"), Some(8));
        assert_eq!(btf.enumerator("NO_SUCH_ENUMERATOR_XYZ"), None);
        // ITER_UBUF (Linux 6.0) and ITER_IOVEC differ and sit in one small enum.
        if let (Some(ubuf), Some(iovec)) =
            (btf.enumerator("ITER_UBUF"), btf.enumerator("ITER_IOVEC"))
        {
            assert_ne!(ubuf, iovec);
            assert!((0..8).contains(&ubuf) && (0..8).contains(&iovec));
        }
    }

    #[test]
    fn tcp_sock_offsets_match_bpftool() {
        let Some(btf) = vmlinux() else { return };
        let rcv_nxt = btf.member_offset("tcp_sock", "rcv_nxt").unwrap();
        let copied_seq = btf.member_offset("tcp_sock", "copied_seq").unwrap();
        assert!(rcv_nxt > 1000 && rcv_nxt % 4 == 0, "rcv_nxt at {rcv_nxt}");
        assert!(
            copied_seq > 1000 && copied_seq % 4 == 0,
            "copied_seq at {copied_seq}"
        );
        assert_ne!(rcv_nxt, copied_seq);
        println!("tcp_sock.rcv_nxt = {rcv_nxt}, tcp_sock.copied_seq = {copied_seq}");

        let Some(bpftool) = bpftool_members("tcp_sock") else {
            return;
        };
        assert_eq!(rcv_nxt * 8, bpftool["rcv_nxt"]);
        assert_eq!(copied_seq * 8, bpftool["copied_seq"]);
        // Every named, byte-aligned direct member agrees, not just the two we use.
        let mut checked = 0;
        for (name, bits) in &bpftool {
            if name != "(anon)" && bits % 8 == 0 {
                assert_eq!(
                    btf.member_offset("tcp_sock", name).unwrap() * 8,
                    *bits,
                    "{name}"
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} tcp_sock members checked");
    }

    #[test]
    fn anonymous_members_add_up() {
        let Some(btf) = vmlinux() else { return };
        // struct sock_common (include/net/sock.h) has opened with these, in anonymous
        // unions and structs, for as long as BTF has existed; BPF programs depend on it.
        assert_eq!(btf.member_offset("sock", "__sk_common").unwrap(), 0);
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(
            btf.member_offset("sock_common", "skc_rcv_saddr").unwrap(),
            4
        );
        assert_eq!(btf.member_offset("sock_common", "skc_hash").unwrap(), 8);
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), 14);
        assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
    }

    #[test]
    fn missing_struct_and_member_are_named() {
        let Some(btf) = vmlinux() else { return };
        let e = btf
            .member_offset("no_such_struct_xyz", "rcv_nxt")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "struct no_such_struct_xyz is not in the kernel BTF at /sys/kernel/btf/vmlinux"
            ),
            "{e}"
        );
        let e = btf
            .member_offset("tcp_sock", "no_such_member")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("struct tcp_sock has no member no_such_member in the kernel BTF"),
            "{e}"
        );
        assert!(
            e.contains("bpftool btf dump file /sys/kernel/btf/vmlinux format c"),
            "{e}"
        );
    }

    #[test]
    fn unaligned_bitfield_is_refused() {
        let Some(btf) = vmlinux() else { return };
        // skc_reuse:4 then skc_reuseport:1, include/net/sock.h.
        let e = btf
            .member_offset("sock_common", "skc_reuseport")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sock_common.skc_reuseport is a bitfield starting at bit"),
            "{e}"
        );
    }

    #[test]
    fn missing_file_says_enable_btf() {
        let Err(e) = KernelBtf::load(Path::new("/nonexistent/btf/vmlinux")) else {
            panic!("loading a missing file must fail");
        };
        let e = e.to_string();
        assert_eq!(
            e,
            "this kernel has no BTF at /nonexistent/btf/vmlinux; tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }

    #[test]
    fn not_btf_is_refused() {
        let e = KernelBtf::load(Path::new("/proc/self/stat")).err().unwrap();
        assert!(format!("{e:#}").contains("bad magic"), "{e:#}");
    }

    /// A hand-built BTF file: struct outer { int a; union { int b; struct { int c; int d; }; }; }
    /// with a typedef in the way, so the reader is tested without a kernel.
    #[test]
    fn synthetic_btf() {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0td\0".to_vec();
        let s = |name: &str| {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let info = |kind: u32, vlen: u32, kflag: bool| (kflag as u32) << 31 | kind << 24 | vlen;
        let mut types: Vec<u32> = Vec::new();
        // 1: int, 4 bytes, 32 bits
        types.extend([s("int"), info(BTF_KIND_INT, 0, false), 4, 32]);
        // 2: anon struct { int c @0; int d @32 }
        types.extend([
            0,
            info(BTF_KIND_STRUCT, 2, false),
            8,
            s("c"),
            1,
            0,
            s("d"),
            1,
            32,
        ]);
        // 3: anon union { int b @0; <anon> 5 @0 }
        types.extend([0, info(BTF_KIND_UNION, 2, false), 8, s("b"), 1, 0, 0, 5, 0]);
        // 4: struct outer { int a @0; <anon> 3 @64 } (kind_flag: bitfield encoding)
        types.extend([
            s("outer"),
            info(BTF_KIND_STRUCT, 2, true),
            16,
            s("a"),
            1,
            0,
            0,
            3,
            64,
        ]);
        // 5: typedef td -> 2
        types.extend([s("td"), info(BTF_KIND_TYPEDEF, 0, false), 2]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut file = Vec::new();
        file.extend(BTF_MAGIC.to_ne_bytes());
        file.extend([1u8, 0]);
        for v in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            file.extend(v.to_ne_bytes());
        }
        file.extend(&type_bytes);
        file.extend(&strings);

        let btf = KernelBtf::parse(Path::new("test"), &file).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "d").unwrap(), 12);
        assert!(btf.member_offset("outer", "td").is_err());

        // Cut anywhere inside the type section, the file is refused, not misread.
        for cut in [25, 40, file.len() - strings.len() - 1] {
            assert!(
                KernelBtf::parse(Path::new("test"), &file[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
