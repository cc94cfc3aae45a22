//! Reading a function's machine code: is its entry a Go prologue, where are its RETs, and where
//! do other functions call it.
//!
//! Uprobes go at a function's entry and at each RET found by decoding the whole function, never
//! on uretprobes (a uretprobe rewrites the return address on the goroutine stack, which Go
//! moves and copies: the relay crashes). Before any probe, the entry must look like what the Go
//! compiler emits (cmd/internal/obj/x86/obj6.go `stacksplit`, register ABI with g in R14 and
//! g.stackguard0 at offset 16, runtime/runtime2.go `g`):
//! - frame ≤ StackSmall (128 bytes): `cmp rsp, [r14+0x10]`
//! - frame ≤ StackBig (4096 bytes): `lea r12, [rsp-N]; cmp r12, [r14+0x10]`
//! - larger: `mov r12, rsp; sub r12, N; jb ...; cmp r12, [r14+0x10]`
//! - nosplit with a frame: `push rbp; mov rbp, rsp` (cmd/internal/obj/x86/obj6.go `preprocess`)
//!
//! If the text start or a function table entry were wrong, the bytes at an "entry" would be the
//! middle of some instruction and none of these would match: this check is what makes a wrong
//! address refuse instead of corrupting the relay.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The x86-64 near RET without an immediate.
pub const RET_BYTE: u8 = 0xc3;
/// Offset of g.stackguard0 (runtime/runtime2.go `g`: stack.lo, stack.hi, then stackguard0).
const STACKGUARD0: u64 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prologue {
    /// `cmp rsp, [r14+0x10]`: a frame of at most 128 bytes.
    StackCheck,
    /// `lea r12, [rsp-N]; cmp r12, [r14+0x10]`: a frame of at most 4 KiB.
    StackCheckLarge,
    /// `mov r12, rsp; sub r12, N; jb; cmp r12, [r14+0x10]`: a larger frame.
    StackCheckHuge,
    /// `push rbp; mov rbp, rsp`: a nosplit function with a frame.
    FramePointer,
}

impl Prologue {
    pub fn describe(self) -> &'static str {
        match self {
            Prologue::StackCheck => "cmp rsp,[r14+0x10]",
            Prologue::StackCheckLarge => "lea r12,[rsp-N]; cmp r12,[r14+0x10]",
            Prologue::StackCheckHuge => "mov r12,rsp; sub r12,N; jb; cmp r12,[r14+0x10]",
            Prologue::FramePointer => "push rbp; mov rbp,rsp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("no bytes in the file for {entry:#x}..{end:#x} (not in a loaded segment)")]
    NotInFile { entry: u64, end: u64 },
    #[error("an undecodable instruction at {at:#x}")]
    Undecodable { at: u64 },
    #[error("a RET with an immediate (0xc2) at {at:#x}, which Go does not emit")]
    UnexpectedRet { at: u64 },
    #[error("the bytes at {entry:#x} are not a Go function prologue: {bytes}")]
    NotAPrologue { entry: u64, bytes: String },
    #[error("the call at {call:#x} is {len} bytes long, not a plain call rel32 (5)")]
    UnexpectedCall { call: u64, len: usize },
    #[error("after the call at {call:#x}, the instruction at {at:#x} may change its result (RAX) or the frame before any branch or RET")]
    NoSiteAfterCall { call: u64, at: u64 },
}

/// Where a probe sees what a call returned, without a probe on the callee's own RETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// The first branch (`jcc`, `jmp` or `call`) after the call, with RAX and the caller's
    /// frame (RSP, RBP) untouched since: RAX is still the callee's first result. The kernel
    /// emulates branches, so a uprobe here costs no single step.
    Branch(u64),
    /// The caller's own RET right after the call (a wrapper returning the callee's results):
    /// RAX is the same result; the kernel single-steps a RET, so this one is dearer.
    Ret(u64),
}

/// A call found in a caller: its address, and where its result is seen (or why nowhere).
pub type CallSite = (u64, Result<AfterCall, CodeError>);

/// The length of `call rel32` in 64-bit code: the return address is the call's address + 5.
pub const CALL_REL32_LEN: usize = 5;

fn decoder(code: &[u8], entry: u64) -> Decoder<'_> {
    Decoder::with_ip(64, code, entry, DecoderOptions::NONE)
}

/// `[r14+0x10]`, g.stackguard0.
fn is_stackguard(insn: &Instruction, operand: u32) -> bool {
    insn.op_kind(operand) == OpKind::Memory
        && insn.memory_base() == Register::R14
        && insn.memory_index() == Register::None
        && insn.memory_displacement64() == STACKGUARD0
}

fn is_cmp_with_stackguard(insn: &Instruction, register: Option<Register>) -> bool {
    insn.code() == Code::Cmp_r64_rm64
        && register.is_none_or(|r| insn.op0_register() == r)
        && is_stackguard(insn, 1)
}

/// Which Go prologue `code` (starting at the function's entry) begins with, if any.
pub fn classify_prologue(code: &[u8], entry: u64) -> Option<Prologue> {
    let mut decoder = decoder(code, entry);
    let mut next = || {
        decoder
            .can_decode()
            .then(|| decoder.decode())
            .filter(|insn| !insn.is_invalid())
    };
    let first = next()?;
    if is_cmp_with_stackguard(&first, Some(Register::RSP)) {
        return Some(Prologue::StackCheck);
    }
    if first.code() == Code::Lea_r64_m
        && first.memory_base() == Register::RSP
        && first.memory_index() == Register::None
    {
        let tmp = first.op0_register();
        return next()
            .filter(|second| is_cmp_with_stackguard(second, Some(tmp)))
            .map(|_| Prologue::StackCheckLarge);
    }
    if first.code() == Code::Mov_rm64_r64 && first.op1_register() == Register::RSP {
        let tmp = first.op0_register();
        let sub = next()?;
        let jb = next()?;
        let cmp = next()?;
        let is_sub = matches!(sub.mnemonic(), Mnemonic::Sub) && sub.op0_register() == tmp;
        let is_jb = matches!(jb.mnemonic(), Mnemonic::Jb);
        return (is_sub && is_jb && is_cmp_with_stackguard(&cmp, Some(tmp)))
            .then_some(Prologue::StackCheckHuge);
    }
    if first.code() == Code::Push_r64 && first.op0_register() == Register::RBP {
        let second = next()?;
        let is_mov_rbp_rsp = second.mnemonic() == Mnemonic::Mov
            && second.op0_register() == Register::RBP
            && second.op1_register() == Register::RSP;
        return is_mov_rbp_rsp.then_some(Prologue::FramePointer);
    }
    None
}

/// Checks the prologue, with the first bytes in the error for the one-line refusal.
pub fn check_prologue(code: &[u8], entry: u64) -> Result<Prologue, CodeError> {
    classify_prologue(code, entry).ok_or_else(|| CodeError::NotAPrologue {
        entry,
        bytes: code
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// The addresses of the RET instructions in `code`, which is a whole function starting at
/// `entry` (Go's linker pads between functions with INT3, which decodes harmlessly). Any
/// undecodable byte fails the whole function: a probe must never go where decoding is unsure.
pub fn ret_sites(code: &[u8], entry: u64) -> Result<Vec<u64>, CodeError> {
    let mut decoder = decoder(code, entry);
    let mut sites = Vec::new();
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Err(CodeError::Undecodable { at: insn.ip() });
        }
        match insn.code() {
            Code::Retnq => sites.push(insn.ip()),
            Code::Retnq_imm16 | Code::Retfq | Code::Retfq_imm16 | Code::Retfd | Code::Retfw => {
                return Err(CodeError::UnexpectedRet { at: insn.ip() })
            }
            _ => {}
        }
    }
    Ok(sites)
}

/// Every instruction of `code`, a whole function at `entry`; any undecodable byte fails it.
fn decode_all(code: &[u8], entry: u64) -> Result<Vec<Instruction>, CodeError> {
    let mut decoder = decoder(code, entry);
    let mut all = Vec::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            return Err(CodeError::Undecodable { at: insn.ip() });
        }
        all.push(insn);
    }
    Ok(all)
}

/// The calls to `target` in `code` (a whole function at `entry`), each with where its result
/// can be seen ([`AfterCall`]). Only direct `call rel32`, the only form Go emits for a static
/// call; decoding the whole caller is what makes each address an instruction boundary.
pub fn calls_to(code: &[u8], entry: u64, target: u64) -> Result<Vec<CallSite>, CodeError> {
    let all = decode_all(code, entry)?;
    let mut found = Vec::new();
    for (i, insn) in all.iter().enumerate() {
        if insn.code() != Code::Call_rel32_64 || insn.near_branch_target() != target {
            continue;
        }
        if insn.len() != CALL_REL32_LEN {
            return Err(CodeError::UnexpectedCall {
                call: insn.ip(),
                len: insn.len(),
            });
        }
        found.push((insn.ip(), after_call(insn.ip(), &all[i + 1..])));
    }
    Ok(found)
}

fn touches(insn: &Instruction, register: Register) -> bool {
    insn.op_count() > 0
        && insn.op_kind(0) == OpKind::Register
        && insn.op0_register().full_register() == register
}

/// What follows a call: straight-line instructions up to the first branch or RET. Only forms
/// known not to write RAX pass (stores, compares, tests, nops, moves into other registers),
/// and none may move RSP or RBP before a branch (the probe walks the frame chain from there);
/// an epilogue (`add rsp, N; pop rbp`) may precede a RET, whose probe reads [RSP].
fn after_call(call: u64, next: &[Instruction]) -> Result<AfterCall, CodeError> {
    let mut frame_moved = false;
    for insn in next {
        let refuse = || CodeError::NoSiteAfterCall {
            call,
            at: insn.ip(),
        };
        if insn.code() == Code::Retnq {
            return Ok(AfterCall::Ret(insn.ip()));
        }
        let branch = insn.is_jcc_short_or_near()
            || matches!(
                insn.code(),
                Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64
            );
        if branch {
            return if frame_moved {
                Err(refuse())
            } else {
                Ok(AfterCall::Branch(insn.ip()))
            };
        }
        let epilogue = (insn.code() == Code::Add_rm64_imm8 || insn.code() == Code::Add_rm64_imm32)
            && touches(insn, Register::RSP)
            || insn.code() == Code::Pop_r64 && insn.op0_register() == Register::RBP;
        if epilogue {
            frame_moved = true;
            continue;
        }
        let harmless = match insn.mnemonic() {
            // Flags only.
            Mnemonic::Test | Mnemonic::Cmp | Mnemonic::Nop => true,
            // Writes its first operand: a store, or another register.
            Mnemonic::Mov | Mnemonic::Lea => ![Register::RAX, Register::RSP, Register::RBP]
                .iter()
                .any(|r| touches(insn, *r)),
            _ => false,
        };
        if !harmless {
            return Err(refuse());
        }
    }
    Err(CodeError::NoSiteAfterCall {
        call,
        at: next.last().map_or(call, Instruction::ip),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ENTRY: u64 = 0x401000;

    #[test]
    fn recognises_the_go_prologues() {
        // cmp rsp,[r14+0x10]; jbe ...
        let small = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20];
        assert_eq!(classify_prologue(&small, ENTRY), Some(Prologue::StackCheck));
        // lea r12,[rsp-0x88]; cmp r12,[r14+0x10]
        let large = [
            0x4c, 0x8d, 0xa4, 0x24, 0x78, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10,
        ];
        assert_eq!(
            classify_prologue(&large, ENTRY),
            Some(Prologue::StackCheckLarge)
        );
        // mov r12,rsp; sub r12,0x2000; jb +0x10; cmp r12,[r14+0x10]
        let huge = [
            0x49, 0x89, 0xe4, 0x49, 0x81, 0xec, 0x00, 0x20, 0x00, 0x00, 0x72, 0x10, 0x4d, 0x3b,
            0x66, 0x10,
        ];
        assert_eq!(
            classify_prologue(&huge, ENTRY),
            Some(Prologue::StackCheckHuge)
        );
        // push rbp; mov rbp,rsp
        let frame = [0x55, 0x48, 0x89, 0xe5];
        assert_eq!(
            classify_prologue(&frame, ENTRY),
            Some(Prologue::FramePointer)
        );
    }

    #[test]
    fn refuses_what_is_not_a_prologue() {
        for bytes in [
            &[][..],
            &[0x90, 0xe8, 0, 0, 0, 0][..], // nop; call (runtime.goexit)
            &[0x49, 0x3b, 0x66, 0x18][..], // cmp rsp,[r14+0x18]: not stackguard0
            &[0x48, 0x3b, 0x61, 0x10][..], // cmp rsp,[rcx+0x10]: the pre-1.17 ABI0 g
            &[0x66, 0x10, 0x76, 0x20][..], // the middle of a stack check
            &[0x4c, 0x8d, 0xa4, 0x24][..], // a truncated lea
            &[0x55, 0x48, 0x89, 0xc5][..], // push rbp; mov rbp,rax
            &[0xc3][..],                   // ret
        ] {
            assert_eq!(classify_prologue(bytes, ENTRY), None, "{bytes:02x?}");
        }
        let err = check_prologue(&[0x90, 0xc3], ENTRY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the bytes at 0x401000 are not a Go function prologue: 90 c3"
        );
    }

    #[test]
    fn finds_ret_sites_and_not_c3_bytes_inside_instructions() {
        // cmp rsp,[r14+0x10]; jbe +5; mov eax,0xc3c3c3c3; ret; add rsp,8; ret; int3; int3
        let code = [
            0x49, 0x3b, 0x66, 0x10, // cmp
            0x76, 0x05, // jbe
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, // mov eax, imm (c3 bytes are not RETs)
            0xc3, // ret @ +11
            0x48, 0x83, 0xc4, 0x08, // add rsp,8
            0xc3, // ret @ +16
            0xcc, 0xcc,
        ];
        assert_eq!(
            ret_sites(&code, ENTRY).unwrap(),
            vec![ENTRY + 11, ENTRY + 16]
        );
    }

    const CALLEE: u64 = 0x402000;

    /// `call CALLEE` at ENTRY + `at`.
    fn call_at(at: u64) -> Vec<u8> {
        let rel = i32::try_from(CALLEE as i64 - (ENTRY + at + 5) as i64).unwrap();
        let mut bytes = vec![0xe8];
        bytes.extend(rel.to_le_bytes());
        bytes
    }

    fn calls(tail: &[u8]) -> Vec<CallSite> {
        // cmp rsp,[r14+0x10]; jbe; then the call at +6 and what follows it.
        let mut code = vec![0x49, 0x3b, 0x66, 0x10, 0x76, 0x20];
        code.extend(call_at(6));
        code.extend(tail);
        calls_to(&code, ENTRY, CALLEE).unwrap()
    }

    #[test]
    fn finds_where_a_call_s_result_is_seen_as_go_emits_it() {
        let je = [0x0f, 0x84, 0x92, 0x02, 0x00, 0x00];
        // go1.21 http2Transport.RoundTripOpt: call; test rbx,rbx; je
        let mut tail = vec![0x48, 0x85, 0xdb];
        tail.extend(je);
        assert_eq!(
            calls(&tail),
            vec![(ENTRY + 6, Ok(AfterCall::Branch(ENTRY + 14)))]
        );
        // go1.24-1.27: call; mov [rsp+0x60],rax; test rbx,rbx; je
        let mut tail = vec![0x48, 0x89, 0x44, 0x24, 0x60, 0x48, 0x85, 0xdb];
        tail.extend(je);
        assert_eq!(
            calls(&tail),
            vec![(ENTRY + 6, Ok(AfterCall::Branch(ENTRY + 19)))]
        );
        // A wrapper (ClientConn.RoundTrip from 1.23): call; add rsp,0x18; pop rbp; ret
        assert_eq!(
            calls(&[0x48, 0x83, 0xc4, 0x18, 0x5d, 0xc3]),
            vec![(ENTRY + 6, Ok(AfterCall::Ret(ENTRY + 16)))]
        );
        // A call to another function is not one of them.
        let mut code = vec![0x49, 0x3b, 0x66, 0x10, 0x76, 0x20];
        code.extend(call_at(6));
        assert!(calls_to(&code, ENTRY, CALLEE + 1).unwrap().is_empty());
    }

    #[test]
    fn refuses_a_site_where_the_result_or_the_frame_may_change() {
        for (tail, at) in [
            (&[0x48, 0x8b, 0x44, 0x24, 0x08, 0x74, 0x00][..], 11), // mov rax,[rsp+8]; je
            (&[0x48, 0x31, 0xc0, 0x74, 0x00][..], 11),             // xor rax,rax; je
            (&[0x48, 0x83, 0xc4, 0x18, 0x74, 0x00][..], 15),       // add rsp,0x18; je
            (&[0x48, 0x89, 0xe5, 0x74, 0x00][..], 11),             // mov rbp,rsp; je
            (&[0x48, 0x85, 0xdb][..], 11),                         // test rbx,rbx; (end)
        ] {
            assert_eq!(
                calls(tail),
                vec![(
                    ENTRY + 6,
                    Err(CodeError::NoSiteAfterCall {
                        call: ENTRY + 6,
                        at: ENTRY + at
                    })
                )],
                "{tail:02x?}"
            );
        }
    }

    #[test]
    fn refuses_undecodable_code_and_ret_imm() {
        // 0x06 (push es) is invalid in 64-bit mode.
        assert_eq!(
            ret_sites(&[0x90, 0x06, 0xc3], ENTRY),
            Err(CodeError::Undecodable { at: ENTRY + 1 })
        );
        // A truncated instruction at the end.
        assert!(matches!(
            ret_sites(&[0x90, 0x48, 0x8b], ENTRY),
            Err(CodeError::Undecodable { .. })
        ));
        assert_eq!(
            ret_sites(&[0xc2, 0x08, 0x00], ENTRY),
            Err(CodeError::UnexpectedRet { at: ENTRY })
        );
    }
}
